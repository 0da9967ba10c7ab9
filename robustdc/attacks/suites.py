"""Attack suites: TOML files listing the attacks to run per dataset.

Format (every shipped file repeats it in its header)::

    description = "one line shown by tools"      # optional

    [aliases]                                    # optional
    mnist-sample = "mnist"                       # dataset -> table it shares

    [[cifar10]]                                  # one entry per attack setting
    attack = "bim"                               # required: a name in ATTACKS
    norm = "linf"                                # optional, default: first norm
    epsilon = "8/255"                            # number, "a/b", or an array of them
    step_size = "1/255"                          # optional, number or "a/b"
    steps = 10                                   # optional
    # also: restarts, library, and attack settings such as queries = 1000

An entry whose ``epsilon`` is an array expands to one spec per value, in order. Every
entry of every table is validated on load, so a mistake in any table is reported
whichever dataset is requested.

The shipped suites live in ``robustdc/attacks/suites/`` so that they are installed
with the package. The top-level ``attacks/`` folder of the repository contains identical
copies for browsing, and a test checks that the two stay identical.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robustdc.attacks.spec import AttackSpec, make_spec

#: Folder of the suites shipped with the package.
SUITES_DIR = Path(__file__).resolve().parent / "suites"

_TOP_LEVEL_KEYS = ("description", "aliases")


def list_suites() -> list[str]:
    """Return the names of the shipped suites, sorted."""
    return sorted(path.stem for path in SUITES_DIR.glob("*.toml"))


def suite_path(name_or_path: str | os.PathLike[str]) -> Path:
    """Resolve a shipped suite name (``"paper"``) or a path to a TOML file.

    A value is a path when it is a ``PathLike``, contains a path separator or ends
    with ``.toml``.

    Raises:
        ValueError: an unknown suite name; the message lists the shipped suites.
        FileNotFoundError: the path does not exist.
    """
    text = os.fspath(name_or_path)
    is_path = (
        not isinstance(name_or_path, str) or text.endswith(".toml") or os.sep in text or "/" in text
    )
    if is_path:
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"attack suite file {path} not found")
        return path

    names = list_suites()
    if text not in names:
        close = difflib.get_close_matches(text, names, n=1)
        hint = f". Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown attack suite {text!r}; expected one of: {', '.join(names)} "
            f"or a path to a .toml file{hint}"
        )
    return SUITES_DIR / f"{text}.toml"


def load_suite(name_or_path: str | os.PathLike[str], dataset: str) -> list[AttackSpec]:
    """Return the attack specs of a suite for ``dataset``, in file order.

    Args:
        name_or_path: a shipped suite name (see :func:`list_suites`) or a TOML path.
        dataset: dataset name, e.g. ``"cifar10"``; resolved through ``[aliases]``
            when the suite has no table of that name.

    Raises:
        ValueError: an unknown suite, a malformed file, an invalid entry (the
            message names the file, table and entry number) or a dataset the suite
            does not cover.
        FileNotFoundError: a path that does not exist.
    """
    path = suite_path(name_or_path)
    tables, aliases = _parse(path)
    table = dataset
    if table not in tables and dataset in aliases:
        table = aliases[dataset]
    if table not in tables:
        covered = sorted([*tables, *aliases])
        raise ValueError(
            f"attack suite {path} has no attacks for dataset {dataset!r}; it covers: "
            f"{', '.join(covered)}"
        )
    return tables[table]


def _read_toml(path: Path) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib

    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"attack suite {path} is not valid TOML: {err}") from err


def _parse(path: Path) -> tuple[dict[str, list[AttackSpec]], dict[str, str]]:
    document = _read_toml(path)
    aliases = document.get("aliases", {})
    if not isinstance(aliases, Mapping) or not all(
        isinstance(value, str) for value in aliases.values()
    ):
        raise ValueError(f"{path}: [aliases] must map dataset names to table names")

    tables: dict[str, list[AttackSpec]] = {}
    for key, value in document.items():
        if key in _TOP_LEVEL_KEYS:
            continue
        if not isinstance(value, list) or not all(isinstance(entry, dict) for entry in value):
            raise ValueError(
                f"{path}: {key!r} must be an array of tables written [[{key}]]; "
                f"other top-level keys: {', '.join(_TOP_LEVEL_KEYS)}"
            )
        tables[key] = _parse_table(path, key, value)

    for alias, target in aliases.items():
        if target not in tables:
            raise ValueError(
                f"{path}: alias {alias} = {target!r} names no table; tables: {', '.join(tables)}"
            )
    return tables, dict(aliases)


def _parse_table(path: Path, table: str, entries: list[dict[str, Any]]) -> list[AttackSpec]:
    specs: list[AttackSpec] = []
    for number, entry in enumerate(entries, start=1):
        where = f"{path}: [[{table}]] entry {number}"
        if "attack" not in entry:
            raise ValueError(f"{where}: missing key 'attack'")
        epsilons = entry.get("epsilon")
        if not isinstance(epsilons, list):
            epsilons = [epsilons]
        if not epsilons:
            raise ValueError(f"{where}: epsilon is an empty array")
        settings = {key: value for key, value in entry.items() if key not in ("attack", "epsilon")}
        for epsilon in epsilons:
            try:
                spec = make_spec(entry["attack"], epsilon=epsilon, **settings)
            except (ValueError, TypeError) as err:
                raise ValueError(f"{where}: {err}") from err
            if spec in specs:
                raise ValueError(f"{where}: repeats {spec.label} with the same settings")
            specs.append(spec)
    return specs
