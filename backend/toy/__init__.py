"""The built-in toy priors: tiny camera-aware pixel diffusion models of coloured primitives (`toy-shapes`) and
of objects with parts, fronts and patterns (`toy-objects`)."""

from pathlib import Path

_HERE = Path(__file__).resolve().parent
#: The trained weights, saved with `save_pretrained` by `python -m blender_dreamfusion.backend.toy.train`.
WEIGHTS = _HERE / "weights"
OBJECT_WEIGHTS = _HERE / "objects_weights"
#: Built-in model name -> its weights. The view-text reading of toy-objects is the same weights
#: (guidance/toy_objects.py). The names are shared/jobspec.py's BUILTIN_MODELS (a test holds them equal).
BUILTIN_WEIGHTS = {"toy-shapes": WEIGHTS, "toy-objects": OBJECT_WEIGHTS, "toy-objects-view-text": OBJECT_WEIGHTS}
#: Built-in model name -> the module of this package whose `parse` reads its prompts.
_VOCABULARIES = {"toy-shapes": "vocab", "toy-objects": "object_vocab", "toy-objects-view-text": "object_vocab"}


def parse_builtin_prompt(model: str, prompt: str):
    """`prompt` as the built-in `model`'s vocabulary reads it; VocabularyError, listing that vocabulary, when it
    is outside (what the server refuses a submit with before any job starts, and what the prior checks)."""
    import importlib

    if model not in _VOCABULARIES:
        raise ValueError(f"{model!r} is not a built-in prior; built-in: {', '.join(_VOCABULARIES)}")
    return importlib.import_module(f"{__name__}.{_VOCABULARIES[model]}").parse(prompt)


def builtin_neighbours(model: str, prompt: str) -> list[str]:
    """The prompts of the built-in `model`'s vocabulary nearest `prompt` (its module's `neighbours`), as text."""
    import importlib

    vocabulary = importlib.import_module(f"{__name__}.{_VOCABULARIES[model]}")
    return [p.text() for p in vocabulary.neighbours(vocabulary.parse(prompt))]
