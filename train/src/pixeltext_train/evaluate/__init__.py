"""Evaluation: fine-tuning and scoring on language-understanding tasks, intrinsic losses,
reconstruction pictures, and the end-to-end demo. ``eval/run.py`` is the entry point."""
