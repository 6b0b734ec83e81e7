"""UAX #9 implicit levels and L2 reordering on small hand-checked cases."""

from pixeltext_render.bidi import embedding_levels, visual_order


def test_left_to_right_text_is_level_zero():
    assert embedding_levels("plain text 123").tolist() == [0] * 14


def test_hebrew_inside_english():
    assert embedding_levels("ab אב cd").tolist() == [0, 0, 0, 1, 1, 0, 0, 0]


def test_numbers_in_a_right_to_left_paragraph_are_level_two():
    # first strong character is Arabic: the paragraph is right to left (base level 1)
    assert embedding_levels("سلام 42").tolist() == [1, 1, 1, 1, 1, 2, 2]


def test_european_numbers_after_arabic_letters_become_arabic_numbers():
    levels = embedding_levels("a س 1")
    assert levels.tolist() == [0, 0, 1, 1, 2]


def test_visual_order_reverses_right_to_left_runs():
    assert visual_order([0, 1, 1, 0]) == [0, 2, 1, 3]
    assert visual_order([1, 2, 2, 1]) == [3, 1, 2, 0]
    assert visual_order([]) == []
