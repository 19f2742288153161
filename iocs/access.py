"""Channel Access security of the station simulators, as EPICS access security sets it.

An EPICS IOC reads an access security file (ACF): user and host access groups
(UAG, HAG) and, per access security group (ASG), who may read and who may
write. caproto asks each PV, per client, ``check_access(hostname, username)``;
:func:`install` answers it for every PV of a station (record fields included)
from an :class:`AccessPolicy`, which is the ACF of the simulators:

==================  ==========================================  ======================
group (ASG)         PVs                                         write
==================  ==========================================  ======================
``OPERATE``         everything else (motors, detector, source,  the writers (default:
                    potentiostat, ``clock:wait``...)            the IOC's owner)
``SIMULATOR``       controls no real station has: the           the IOC's owner only,
                    simulated clock's ``clock:hold``,           never other writers
                    ``clock:sync``, ``clock:waiting``, and any
                    PV whose name matches
                    :data:`SIMULATOR_PATTERNS` (fault
                    injection, ground truth)
``HARD``            configuration a client must not change:     nobody (read only)
                    a motor's maximum velocity (``.VMAX``)
==================  ==========================================  ======================

Everybody may read everything (``READ`` for any user on any host). The owner
is the user who started the IOC; ``--ca-writers`` names other users (or ``*``:
anyone, the behaviour of a plain caproto IOC) and ``--ca-hosts`` the client
hosts writes may come from (default: any; the simulators serve loopback).

Motor limits are clipped, not refused: a put to ``.HLM``/``.DHLM`` or
``.LLM``/``.DLLM`` lands inside the motor's configured travel (a client can
narrow the soft limits, never widen them past the hardware's), and ``.VELO``
inside ``(0, .VMAX]``.

Like EPICS access security, this trusts the user and host names a Channel
Access client declares (a ``CLIENT_NAME``/``HOST_NAME`` message): it keeps other
users' ordinary clients (caproto, pyepics, ophyd, CSS) from writing, not a
client forging its name; the simulators serve loopback only.
"""

from __future__ import annotations

import fnmatch
import getpass
import logging
import math
import os
import pwd
from collections.abc import Iterable
from dataclasses import dataclass, field

from caproto import AccessRights

__all__ = [
    "HARD",
    "OPERATE",
    "SIMULATOR",
    "SIMULATOR_PATTERNS",
    "AccessPolicy",
    "add_arguments",
    "classify",
    "install",
    "policy_from_args",
]

logger = logging.getLogger(__name__)

OPERATE = "OPERATE"
SIMULATOR = "SIMULATOR"
HARD = "HARD"

#: PV names (after the prefix; fnmatch patterns) of the simulator-only controls
SIMULATOR_PATTERNS: list[str] = [
    "clock:hold",
    "clock:sync",
    "clock:waiting",
    "sim:*",
    "*:sim:*",
    "fault:*",
    "*:fault:*",
    "*truth*",
]

#: record fields (``PV.FIELD``) no client may write
HARD_FIELDS = {"VMAX"}

#: motor-record fields clipped to the motor's configured travel
_HIGH_LIMITS = {"HLM", "DHLM"}
_LOW_LIMITS = {"LLM", "DLLM"}

_READ = AccessRights.READ
_READ_WRITE = AccessRights.READ | AccessRights.WRITE


def _owner() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return getpass.getuser()


@dataclass(frozen=True)
class AccessPolicy:
    """Who may write which group (see the module docstring).

    ``owner``: the IOC's user; ``writers``: users who may write ``OPERATE`` PVs
    (the owner always may; ``"*"``: anyone); ``hosts``: client hosts writes may
    come from (empty: any).
    """

    owner: str = field(default_factory=_owner)
    writers: frozenset = frozenset()
    hosts: frozenset = frozenset()

    def _host_ok(self, host: str | None) -> bool:
        return not self.hosts or (host or "") in self.hosts

    def rights(self, group: str, host: str | None, user: str | None) -> AccessRights:
        """The access rights of ``user`` on ``host`` to a PV of ``group``."""
        if group == HARD or not self._host_ok(host):
            return _READ
        if user == self.owner:
            return _READ_WRITE
        if group == OPERATE and ("*" in self.writers or user in self.writers):
            return _READ_WRITE
        return _READ

    def describe(self) -> str:
        writers = (
            "anyone" if "*" in self.writers else ", ".join([self.owner, *sorted(self.writers)])
        )
        hosts = ", ".join(sorted(self.hosts)) or "any host"
        return (
            f"CA writes: {writers} from {hosts}; simulator controls: {self.owner} only; "
            "motor limits clipped to the configured travel"
        )


def classify(relative_name: str) -> str:
    """The group of a PV named ``relative_name`` (without the IOC prefix)."""
    base, _, fld = relative_name.partition(".")
    if fld in HARD_FIELDS:
        return HARD
    if any(fnmatch.fnmatchcase(base, pattern) for pattern in SIMULATOR_PATTERNS):
        return SIMULATOR
    return OPERATE


def _checker(policy: AccessPolicy, group: str):
    def check_access(hostname, username):
        return policy.rights(group, hostname, username)

    return check_access


def _clipping(data, lo: float, hi: float):
    """Wrap ``data.verify_value`` so that a put lands in ``[lo, hi]`` (NaN refused)."""
    verify = data.verify_value

    async def verify_value(value):
        value = float(value)
        if math.isnan(value):
            raise ValueError(f"{data.pvname}: NaN is not a valid value")
        return await verify(min(max(value, lo), hi))

    data.verify_value = verify_value


def _travel(data) -> tuple[float, float] | None:
    """The configured travel (low, high) of a motor record's group, if it says."""
    group = getattr(data, "group", None)
    limits = getattr(group, "hard_limits", None)
    if limits is None:
        limits = getattr(group, "defaults", {}).get("limits")
    if limits is None:
        return None
    lo, hi = (float(v) for v in limits)
    return (lo, hi) if lo < hi else None


def _guard_motor(name: str, data) -> None:
    fields = data.fields
    travel = _travel(data)
    if travel is not None:
        for key in _HIGH_LIMITS | _LOW_LIMITS:
            if key in fields:
                _clipping(fields[key], *travel)
    if "VELO" in fields and "VMAX" in fields:
        velo, vmax = fields["VELO"], fields["VMAX"]
        verify = velo.verify_value

        async def verify_velocity(value, _verify=verify, _vmax=vmax):
            value = float(value)
            top = float(_vmax.value or 0.0)
            if math.isnan(value) or value <= 0:
                raise ValueError(f"{name}.VELO must be > 0")
            return await _verify(min(value, top) if top > 0 else value)

        velo.verify_value = verify_velocity


def _walk(pvdb: dict, prefix: str) -> Iterable[tuple[str, object]]:
    seen = set()
    for name, data in pvdb.items():
        if id(data) in seen:
            continue
        seen.add(id(data))
        rel = name[len(prefix) :] if prefix and name.startswith(prefix) else name
        yield rel, data
        for fld, fdata in (getattr(data, "fields", None) or {}).items():
            if id(fdata) not in seen:
                seen.add(id(fdata))
                yield f"{rel}.{fld}", fdata


def install(pvdb: dict, policy: AccessPolicy, *, prefix: str = "") -> dict[str, int]:
    """Answer ``check_access`` of every PV of ``pvdb`` (and its record fields) from
    ``policy``; clip motor limits and velocities. Returns the count per group."""
    counts = {OPERATE: 0, SIMULATOR: 0, HARD: 0}
    for rel, data in _walk(pvdb, prefix):
        group = classify(rel)
        data.check_access = _checker(policy, group)
        counts[group] += 1
        if getattr(data, "record_type", None) == "motor":
            _guard_motor(rel, data)
    logger.info("access security: %s (%s)", policy.describe(), counts)
    return counts


def add_arguments(parser) -> None:
    """``--ca-writers`` and ``--ca-hosts`` on an IOC's command line."""
    parser.add_argument(
        "--ca-writers",
        default="",
        metavar="USERS",
        help="comma-separated users who may write PVs besides the IOC's owner "
        "('*': anyone); simulator controls stay the owner's",
    )
    parser.add_argument(
        "--ca-hosts",
        default="",
        metavar="HOSTS",
        help="comma-separated client host names writes may come from (default: any)",
    )


def _names(text: str) -> frozenset:
    return frozenset(n.strip() for n in (text or "").split(",") if n.strip())


def policy_from_args(args) -> AccessPolicy:
    return AccessPolicy(
        writers=_names(getattr(args, "ca_writers", "")),
        hosts=_names(getattr(args, "ca_hosts", "")),
    )
