"""Where the YAML configs live: ``conf/`` at the project root (next to this package)."""

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
