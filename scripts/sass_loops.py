"""The loops of a function's SASS as cuobjdump prints it, for the compile checks that count the
instructions the performance model uses (cuda_resource_check.py, triton_compile_check.py)."""

from __future__ import annotations

import re

_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);")
_BRANCH = re.compile(r"\bBRA\s+(?:`\()?(?:0x)?([0-9a-f]+)")


def loops(sass: str) -> list:
    """Every loop of `sass` (one function's SASS): a backward branch and its target, as the list
    of the instructions between them."""
    return [body for _, _, body in spans(sass)]


def spans(sass: str) -> list:
    """Every loop of `sass` as (first address, last address, instructions), in the order of
    their backward branches (an inner loop before the loop that holds it)."""
    code = instructions(sass)
    found = []
    for addr, text in code:
        branch = _BRANCH.search(text)
        if branch and int(branch.group(1), 16) < addr:
            start = int(branch.group(1), 16)
            found.append((start, addr, [t for a, t in code if start <= a <= addr]))
    return found


def instructions(sass: str) -> list:
    """`sass`'s instructions in order, as (address, text)."""
    return [(int(m.group(1), 16), m.group(2)) for m in _LINE.finditer(sass)]


def smallest_holding(bodies, pattern: str):
    """The smallest of the loop `bodies` with an instruction matching `pattern`, or None."""
    held = [b for b in bodies if any(re.search(pattern, t) for t in b)]
    return min(held, key=len) if held else None


def functions(sass: str) -> dict:
    """A multi-function SASS dump split by function: mangled name -> its SASS."""
    return {block.split("\n", 1)[0].strip(): block
            for block in re.split(r"\n\s*Function : ", sass)[1:]}
