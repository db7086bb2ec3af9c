"""The registry of public warning devices: sirens (警报器), LED displays (显示屏), speakers (大喇叭).

Each device serves one or more nodes of the region tree (a street's siren covers every
community of the street) and follows a profile: the command it gets at each warning level. A
level missing from the profile means the device stays silent at that level (sirens usually
sound only for orange and red). Siren patterns are named, so every siren of a district sounds
the same signal for the same level.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ews.levels import Level
from ews.yamlfile import load_model

DeviceType = Literal["siren", "display", "speaker"]
LevelKey = Literal["blue", "yellow", "orange", "red"]
_CODE = re.compile(r"^\d{6}(\d{3}(\d{3})?)?$")
_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # a single MQTT topic level


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SirenPattern(_Strict):
    on_s: float = Field(gt=0)
    off_s: float = Field(ge=0)
    cycles: int = Field(ge=1)


class Command(_Strict):
    """What a device does at one level; fields that do not apply to its type are ignored."""

    pattern: str | None = None  # siren: a name from `patterns`
    flash: bool = False  # display: blink the text
    repeat: int = Field(1, ge=1)  # speaker: times to read the message


class Profile(_Strict):
    type: DeviceType
    levels: dict[LevelKey, Command]


class Device(_Strict):
    id: str
    name: str
    profile: str
    serves: list[str] = Field(min_length=1)  # region codes; a code covers its whole subtree
    lat: float | None = None
    lon: float | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _DEVICE_ID.fullmatch(v):
            raise ValueError("a device id is 1-64 letters, digits, '.', '_' or '-' (it is a topic level)")
        return v

    @field_validator("serves")
    @classmethod
    def _codes(cls, v: list[str]) -> list[str]:
        for code in v:
            if not _CODE.fullmatch(code):
                raise ValueError(f"{code!r} is not a 6, 9 or 12-digit region code")
        return v


class DeviceFile(_Strict):
    patterns: dict[str, SirenPattern] = Field(default_factory=dict)
    profiles: dict[str, Profile]
    devices: list[Device]
    # how long a command stays valid: a device that comes back later must not act on it
    command_ttl_s: float = Field(600.0, gt=0)

    @model_validator(mode="after")
    def _refs(self) -> DeviceFile:
        seen: set[str] = set()
        for d in self.devices:
            if d.id in seen:
                raise ValueError(f"device {d.id} appears twice")
            seen.add(d.id)
            if d.profile not in self.profiles:
                raise ValueError(f"device {d.id}: unknown profile {d.profile!r}")
        for name, p in self.profiles.items():
            for level, cmd in p.levels.items():
                if p.type == "siren" and cmd.pattern not in self.patterns:
                    raise ValueError(f"profile {name}, level {level}: siren needs a pattern from `patterns`")
        return self


@dataclass(frozen=True)
class Target:
    """One device and what it gets for one warning."""

    device: Device
    type: DeviceType
    command: Command | None  # None: clear this warning from the device
    pattern: SirenPattern | None


class DeviceRegistry:
    def __init__(self, f: DeviceFile):
        self.file = f
        self.devices = {d.id: d for d in f.devices}

    @classmethod
    def load(cls, path: str | Path) -> DeviceRegistry:
        return cls(load_model(DeviceFile, path))

    def serving(self, community: str) -> list[Device]:
        """Devices whose served subtrees contain `community`, in registry order."""
        return [d for d in self.file.devices if any(community.startswith(code) for code in d.serves)]

    def targets(self, community: str, level: Level, *, clear: bool, peak: Level) -> list[Target]:
        """Commands for a warning at `level` in `community`; with `clear`, the devices that may
        show the warning (any command up to `peak`) are told to drop it."""
        out: list[Target] = []
        for d in self.serving(community):
            p = self.file.profiles[d.profile]
            if clear or level.key not in p.levels:
                if any(Level.parse(k) <= peak for k in p.levels):
                    out.append(Target(d, p.type, None, None))
                continue
            cmd = p.levels[level.key]
            pattern = self.file.patterns.get(cmd.pattern) if cmd.pattern else None
            out.append(Target(d, p.type, cmd, pattern))
        return out
