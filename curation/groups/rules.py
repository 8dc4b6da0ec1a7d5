"""Member rules: which of a chip's candidate scenes join its group.

A rule is given by name (:data:`MEMBER_RULES`) or as a callable of the :class:`MemberRule`
shape, as odc-stac's ``groupby`` takes a name or a callable: a user plugs in another
co-location rule without editing the grouping code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from terracorpus.curation.diversity import Candidates, Rules, Selection, select_members
from terracorpus.curation.errors import GroupingError


class MemberRule(Protocol):
    """Choose the members of one group among its candidate scenes.

    A rule must test coverage only through ``cover`` and record every test in
    :attr:`Selection.tested` (candidate position, passed), and its picks must depend only on
    its arguments and those outcomes: grouping replays one chip's selection on every chip of
    the same anchor where the tested candidates have the same outcomes.

    Args:
        anchor_sensor: the anchor's sensor code (the anchor counts as one image of it).
        anchor_features: the anchor date's point, shape (3,)
            (:func:`terracorpus.curation.diversity.time_features`).
        candidates: the scenes that may join (anchor excluded), as aligned arrays.
        sensor_order: sensor codes, finest first.
        rules: group size limits and the minimum coverage of a member.
        cover: coverage fraction of the footprint by candidate ``k``.

    Returns:
        The picks as (candidate position, coverage), and the trace of coverage tests.
    """

    def __call__(
        self,
        anchor_sensor: int,
        anchor_features: NDArray[np.float64],
        candidates: Candidates,
        sensor_order: Sequence[int],
        rules: Rules,
        cover: Callable[[int], float],
    ) -> Selection: ...


MEMBER_RULES: dict[str, MemberRule] = {
    # Every other sensor first, then dates spread over seasons and years.
    "spread": select_members,
}


def member_rule(rule: str | MemberRule) -> MemberRule:
    """The rule named ``rule``, or ``rule`` itself when it is a callable."""
    if not isinstance(rule, str):
        return rule
    try:
        return MEMBER_RULES[rule]
    except KeyError:
        raise GroupingError(
            f"unknown member rule {rule!r}; choose one of {sorted(MEMBER_RULES)} or pass a callable"
        ) from None
