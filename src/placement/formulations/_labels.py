"""Canonical labelling: rename labels ``0, 1, ...`` in the order they first appear.

Interchangeable GPUs (or clusters) make every relabelling of a solution an equally good solution;
the models cut that symmetry by demanding the *canonical* labelling (the first expert sits on
label 0, the next new label seen is 1, ...), and warm starts and dynamic programmes must use the
same one.  This module is the one place that computes it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["relabel_by_first_appearance"]


def relabel_by_first_appearance(labels: np.ndarray, num_labels: int | None = None, *,
                                by_first_row: bool = False) -> np.ndarray:
    """``labels`` renamed ``0, 1, ...`` in the order the labels first appear.

    Parameters
    ----------
    labels:
        ``int [..., n]`` labels in ``[0, num_labels)``; each row (last axis) is renamed by the
        order in which its own labels first appear.
    num_labels:
        Number of possible labels (default ``labels.max() + 1``).  Labels absent from a row keep
        their relative order after the present ones, so the renaming is always a permutation.
    by_first_row:
        Rename every row with the permutation that makes ``labels[0]`` canonical (one renaming of
        the GPUs of a whole ``[layers, experts]`` placement, as the symmetry rows of the affinity
        models demand) instead of each row by itself.

    Returns
    -------
    numpy.ndarray
        ``int64``, the shape of ``labels``.

    Examples
    --------
    >>> import numpy as np
    >>> relabel_by_first_appearance(np.array([2, 2, 0, 1]))
    array([0, 0, 1, 2])
    >>> relabel_by_first_appearance(np.array([[3, 1, 1, 0], [0, 2, 3, 1]]))
    array([[0, 1, 1, 2],
           [0, 1, 2, 3]])
    >>> relabel_by_first_appearance(np.array([[3, 1, 1, 0], [0, 2, 3, 1]]), 4, by_first_row=True)
    array([[0, 1, 1, 2],
           [2, 3, 0, 1]])
    """
    lab = np.asarray(labels, dtype=np.int64)
    if lab.ndim == 0 or lab.shape[-1] == 0:
        return lab.copy()
    K = int(lab.max()) + 1 if num_labels is None else int(num_labels)
    key = lab[:1] if by_first_row else lab
    n = key.shape[-1]
    rows = key.reshape(-1, n)
    R = rows.shape[0]
    # first[r, c]: position of label c's first appearance in row r (n when absent)
    first = np.full((R, K), n, dtype=np.int64)
    np.minimum.at(first, (np.repeat(np.arange(R), n), rows.ravel()), np.tile(np.arange(n), R))
    order = np.argsort(first, axis=1, kind="stable")  # labels by first appearance, absent ones last
    perm = np.empty_like(order)
    np.put_along_axis(perm, order, np.broadcast_to(np.arange(K), (R, K)), axis=1)  # perm[r, old] = new
    if by_first_row:
        return perm[0][lab]
    return np.take_along_axis(perm, rows, axis=1).reshape(lab.shape)
