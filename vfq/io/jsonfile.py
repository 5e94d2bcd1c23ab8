"""Reading a JSON file with errors that say what the file was meant to be."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vfq.errors import UnreadableInputError


def read_json(path: str | os.PathLike[str], expected: str) -> Any:
    """Parse the JSON file at ``path``; ``expected`` names what it should hold (for messages).

    Raises:
        UnreadableInputError: the file cannot be read or is not valid JSON.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise UnreadableInputError(f"cannot read the {expected} {path}: {e}") from e
    except json.JSONDecodeError as e:
        raise UnreadableInputError(f"{path} is not valid JSON ({e}); expected a {expected}") from e
