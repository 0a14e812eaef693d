"""The atomic writers' former home: :mod:`jukebox.atomic` (a base utility) re-exported under the old name."""

from ..atomic import atomic_path, atomic_write_bytes, atomic_write_text, check_can_write, swap_in_folder

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "check_can_write", "swap_in_folder"]
