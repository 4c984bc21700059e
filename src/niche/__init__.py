"""niche: turn general pretrained language models into small, fast, specialized text models.

The public API::

    from niche import TextClassifier, read_labeled
    clf = TextClassifier("transformer", epochs=3).fit(read_labeled("train.csv"))
    clf.evaluate(read_labeled("test.csv"), out_dir="report/")
    clf.save("my-model")
"""

from .version import __version__  # noqa: E402

from .classifier import TextClassifier, build_ensemble  # noqa: E402
from .data import LabeledData, read_labeled, stratified_split  # noqa: E402
from .inspection import inspect  # noqa: E402
from .errors import ConfigError, DataError, DiskFullError, ModelLoadError, NicheError, ResumeError  # noqa: E402

__all__ = [
    "TextClassifier", "build_ensemble", "LabeledData", "read_labeled", "inspect", "stratified_split",
    "NicheError", "DataError", "ConfigError", "ModelLoadError", "ResumeError", "DiskFullError", "__version__",
]
