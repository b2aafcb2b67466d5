"""What every command module shares: the progress bar."""
from __future__ import annotations


def progress(iterable=None, **kwargs):
    """A tqdm progress bar on stderr that adapts to the terminal width."""
    from tqdm import tqdm

    return tqdm(iterable, dynamic_ncols=True, **kwargs)
