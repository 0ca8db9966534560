"""Render `.env.example` from the settings class, so the list of variables cannot drift from the code."""

from __future__ import annotations

from pathlib import Path

from streamguard.core.settings import Settings

HEADER = """\
# Every streamguard setting with its default: copy to .env (read from the working directory) and edit.
# Empty means unset. Unset STREAMGUARD_KAFKA_BOOTSTRAP / STREAMGUARD_SQL_URL mean the embedded local stack.
# Regenerate with: python -m streamguard.core.env_example > .env.example
"""


def render() -> str:
    """Return the text of `.env.example`."""
    lines = [HEADER]
    for name, field in Settings.model_fields.items():
        default = field.default
        value = "" if default is None else (default.as_posix() if isinstance(default, Path) else str(default))
        doc = " ".join((field.description or name).split())
        lines.append(f"# {doc}\nSTREAMGUARD_{name.upper()}={value}\n")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
