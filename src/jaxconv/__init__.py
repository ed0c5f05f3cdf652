"""jaxconv: convolutional networks in JAX/Flax.

    >>> import jaxconv
    >>> model = jaxconv.get_model("resnet50", num_classes=10)
    >>> print(jaxconv.format_summary(jaxconv.summary("vgg16")))
"""

__version__ = "0.1.0"

# Importing the zoo registers every architecture, whichever jaxconv module is imported first.
from jaxconv import models  # noqa: E402
from jaxconv.analysis import format_summary, summary  # noqa: E402
from jaxconv.registry import get_model, list_models, model_info, register  # noqa: E402

__all__ = ["format_summary", "get_model", "list_models", "model_info", "models", "register", "summary"]
