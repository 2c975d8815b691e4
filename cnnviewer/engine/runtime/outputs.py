"""What a module 'produced', whatever it returns: used by the recorders and the gradient views."""

from __future__ import annotations

from typing import Any

from torch import Tensor


def first_tensor(output: Any) -> Tensor | None:
    """The tensor a module 'produces': itself, or the first one in a tuple/list/dict."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_tensor(item)
            if found is not None:
                return found
    # torchvision's GoogLeNetOutputs / InceptionOutputs are namedtuples: covered above.
    return None
