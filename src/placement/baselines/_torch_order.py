"""The order in which CPU torch sorts EPLB's loads, ties included, reproduced in numpy.

What torch does
---------------
DeepSeek's EPLB orders items with ``weight.sort(-1, descending=True)``.  That sort is not stable:
on the CPU, torch's default sort is libstdc++'s ``std::sort``, an introsort (median-of-three
quicksort with an unguarded Hoare partition that swaps equal keys, heapsort past depth
``2 * floor(log2 n)``) that leaves ranges of up to 16 items to a final insertion sort.  So:

* rows of at most 16 items come out stable (equal loads keep index order);
* longer rows put equal loads in a fixed, data-dependent but deterministic pattern, which
  :func:`std_sort_descending` reproduces by transcribing GCC's algorithm on item indices.

EPLB's other order-dependent calls need no transcription: ``max`` / ``min`` along a dimension
return the first best index, as :func:`numpy.argmax` / :func:`numpy.argmin` do.

Why it matters
--------------
Ties are common in EPLB's input: the replicas of one expert carry equal loads, and their order
decides which replica rank lands on which GPU; two equally loaded experts are placed in that
order too.  Reproducing EPLB's output bit for bit (``rebalance_experts(..., faithful=True)`` and
the golden tests recorded from torch) therefore needs torch's tie order, not numpy's stable one.

Checked against torch 2.13's CPU sort (``tests/test_eplb.py`` holds recorded orders, including
the heapsort fallback).  A torch build that sorts with x86-simd-sort, or a GPU sort, orders ties
its own way.
"""

from __future__ import annotations

import numpy as np

__all__ = ["INSERTION_THRESHOLD", "argsort_descending", "std_sort_descending"]

#: libstdc++'s ``_S_threshold``: introsort leaves ranges this short to insertion sort.
INSERTION_THRESHOLD = 16


def argsort_descending(weight: np.ndarray) -> np.ndarray:
    """Row-wise ``weight.sort(-1, descending=True).indices`` as CPU torch computes it.

    Rows without ties have one sorted order, and ``std::sort`` is an insertion sort (stable) up
    to :data:`INSERTION_THRESHOLD` items, so numpy's stable sort serves those rows; rows of more
    items with ties go through :func:`std_sort_descending`.

    Parameters
    ----------
    weight:
        ``float32 [rows, n]`` finite keys.

    Returns
    -------
    numpy.ndarray
        ``int64 [rows, n]``: item indices, heaviest first.

    Examples
    --------
    >>> argsort_descending(np.array([[1.0, 3.0, 3.0]], dtype=np.float32))
    array([[1, 2, 0]])
    """
    order = np.argsort(-weight, axis=1, kind="stable")
    n = weight.shape[1]
    if n > INSERTION_THRESHOLD:
        ordered = np.take_along_axis(weight, order, axis=1)
        for row in np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1)):
            order[row] = std_sort_descending(weight[row].tolist())
    return order


def std_sort_descending(key: list[float]) -> list[int]:
    """The permutation libstdc++'s ``std::sort(..., greater)`` applies to ``key``.

    A transcription of GCC's introsort (median-of-three pivot moved to the front, unguarded
    Hoare partition that swaps equal keys, heapsort past depth ``2 * floor(log2 n)``, then a
    final insertion sort), acting on indices.  Only the placement of equal keys depends on it.

    Parameters
    ----------
    key:
        ``[n]`` keys (anything ordered by ``>``).

    Returns
    -------
    list of int
        ``[n]`` item indices, greatest key first.

    Examples
    --------
    >>> std_sort_descending([0.0] * 17)
    [8, 16, 15, 14, 13, 12, 11, 10, 9, 0, 7, 6, 5, 4, 3, 2, 1]
    """
    a = list(range(len(key)))
    n = len(a)

    def before(i: int, j: int) -> bool:  # the comparator, on item indices
        return key[i] > key[j]

    def sift_down(first: int, hole: int, length: int, value: int) -> None:  # std::__adjust_heap
        top = hole
        child = hole
        while child < (length - 1) // 2:
            child = 2 * (child + 1)
            if before(a[first + child], a[first + child - 1]):
                child -= 1
            a[first + hole] = a[first + child]
            hole = child
        if length % 2 == 0 and child == (length - 2) // 2:
            child = 2 * (child + 1)
            a[first + hole] = a[first + child - 1]
            hole = child - 1
        parent = (hole - 1) // 2
        while hole > top and before(a[first + parent], value):
            a[first + hole] = a[first + parent]
            hole = parent
            parent = (hole - 1) // 2
        a[first + hole] = value

    def heapsort(first: int, last: int) -> None:  # std::__partial_sort(first, last, last)
        length = last - first
        for parent in range((length - 2) // 2, -1, -1):
            sift_down(first, parent, length, a[first + parent])
        while last - first > 1:
            last -= 1
            value = a[last]
            a[last] = a[first]
            sift_down(first, 0, last - first, value)

    def median_to_first(result: int, x: int, y: int, z: int) -> None:
        ax, ay, az = a[x], a[y], a[z]
        if before(ax, ay):
            pick = y if before(ay, az) else z if before(ax, az) else x
        else:
            pick = x if before(ax, az) else z if before(ay, az) else y
        a[result], a[pick] = a[pick], a[result]

    def partition(first: int, last: int, pivot: int) -> int:
        while True:
            while before(a[first], pivot):
                first += 1
            last -= 1
            while before(pivot, a[last]):
                last -= 1
            if first >= last:
                return first
            a[first], a[last] = a[last], a[first]
            first += 1

    def linear_insert(last: int) -> None:
        value = a[last]
        while before(value, a[last - 1]):
            a[last] = a[last - 1]
            last -= 1
        a[last] = value

    def insertion_sort(first: int, last: int) -> None:
        for i in range(first + 1, last):
            value = a[i]
            if before(value, a[first]):
                a[first + 1:i + 1] = a[first:i]
                a[first] = value
            else:
                linear_insert(i)

    def introsort(first: int, last: int, depth: int) -> None:
        while last - first > INSERTION_THRESHOLD:
            if depth == 0:
                heapsort(first, last)
                return
            depth -= 1
            median_to_first(first, first + 1, first + (last - first) // 2, last - 1)
            cut = partition(first + 1, last, a[first])
            introsort(cut, last, depth)
            last = cut

    if n > 1:
        introsort(0, n, 2 * (n.bit_length() - 1))
    insertion_sort(0, min(n, INSERTION_THRESHOLD))
    for i in range(INSERTION_THRESHOLD, n):
        linear_insert(i)
    return a
