"""UAX #9 levels and L2 reordering: hand-checked cases, and Unicode's own conformance file."""

import pytest

from pixeltext_render.assets import assets_dir
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


def test_a_bracket_pair_takes_one_direction():
    # rule N0: the pair around Hebrew inside a left-to-right paragraph is right to left, both halves
    levels = embedding_levels("a בב(גג) d").tolist()
    assert levels[4] == levels[7] == 1
    # ... and around Latin inside a right-to-left paragraph, the paragraph's (context is Hebrew)
    assert embedding_levels("שלום (abc) עולם").tolist()[5:10] == [1, 2, 2, 2, 1]


@pytest.mark.slow
def test_levels_match_unicodes_conformance_cases():
    """Every case of Unicode's BidiCharacterTest.txt (15.0.0) without explicit embedding or
    isolate controls (which pixeltext ignores): the levels of the characters X9 keeps."""
    path = assets_dir() / "unicode" / "BidiCharacterTest.txt"
    if not path.is_file():
        pytest.skip(f"{path} could not be fetched (apt-get download unicode-data: not a Debian machine)")
    explicit = {*range(0x202A, 0x202F), *range(0x2066, 0x206A)}
    cases, failed = 0, []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        codes, direction, _, levels, _ = line.split(";")
        points = [int(code, 16) for code in codes.split()]
        if explicit.intersection(points):
            continue
        got = embedding_levels("".join(map(chr, points)), None if direction == "2" else int(direction))
        cases += 1
        if any(
            want != "x" and int(want) != int(have) for want, have in zip(levels.split(), got, strict=True)
        ):
            failed.append(codes)
    assert cases > 90_000 and not failed, f"{len(failed)} of {cases} cases differ, e.g. {failed[:3]}"
