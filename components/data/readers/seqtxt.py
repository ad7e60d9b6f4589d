"""Sequences as text (the ``sequences_text`` format of SASRec / FMLP-Rec data files): one line per user,
``user item item ...``, separated by spaces or tabs, the items in time order.  A file or a folder holding exactly
one ``*.txt`` file.

* One behavior, ``interact``; the files carry no times, so each event's timestamp is its position in its user's
  sequence (0, 1, 2, ... as Unix seconds: the order is all that is kept).
* A user may span several lines: later lines continue the sequence (positions go on counting), so SASRec's
  ``user item`` pair-per-line files (``Beauty.txt``) read the same as FMLP-Rec's one-line-per-user files.
* Ids are int64 when every token is a canonical integer, else text (per column, as the generic reader).
* Malformed lines (reported under the column ``sequence`` with their line numbers): a user with no item
  (``too_few_fields``), whitespace only (``missing_value``); empty lines are skipped and counted apart.  The
  usual tolerance ``max_malformed_fraction`` applies, per line.

Memory: the good lines' tokens are held as Arrow text until the file is read (about the file's size), then turned
into id columns one record batch at a time.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from components.data.readers.parsing import Problems, _missing, parse_id_auto
from components.data.readers.streaming import IngestError, _Field, read_csv_file
from components.data.readers.tables import _empty_profiles, _interactions
from components.data.schema import BEHAVIOR, ITEM, TIMESTAMP, USER

BEHAVIORS = ("interact",)

#: The one column each line is read into: a separator that text files of ids never hold (a line that does is
#: malformed, ``too_many_fields``).
_LINE = "sequence"
_UNIT_SEPARATOR = "\x1f"


def _split_line(arr: pa.Array) -> tuple[pa.Array, Problems]:
    """One batch of lines -> a list of tokens per line; a line with a user but no item is ``too_few_fields``,
    a line of whitespace only ``missing_value`` (an empty line is blank, counted by the reader)."""
    arr = arr.cast(pa.string()) if not pa.types.is_string(arr.type) else arr
    tokens = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(arr))
    n = pc.list_value_length(tokens).to_numpy(zero_copy_only=False)
    nothing = _missing(pc.utf8_trim_whitespace(arr))  # empty (blank) or whitespace only
    problems: Problems = [("missing_value", nothing)] if nothing.any() else []
    lonely = (n < 2) & ~nothing
    if lonely.any():
        problems.append(("too_few_fields", lonely))
    return tokens, problems


def _sequence_file(raw: Path) -> Path:
    if raw.is_file():
        return raw
    texts = sorted(p for p in raw.glob("*.txt") if p.is_file())
    if len(texts) != 1:
        raise IngestError(f"sequences_text: {raw} must hold exactly one *.txt file of 'user item item ...' lines "
                          f"(or set raw_path to the file); found {[p.name for p in texts]}", path=raw)
    return texts[0]


def read(raw: Path, tol: float, block: int) -> tuple[pa.Table, pa.Table, list[dict]]:
    if not raw.exists():
        raise FileNotFoundError(f"sequences_text: path not found: {raw}")
    path = _sequence_file(raw)
    chunks, rep = read_csv_file(path, [_Field(_LINE, (_LINE,), _split_line)], role="interactions",
                                tolerance=tol, block_size=block, column_names=[_LINE], delimiter=_UNIT_SEPARATOR)
    out: dict[str, list[pa.Array]] = {USER: [], ITEM: [], BEHAVIOR: []}
    lines = chunks.pop(_LINE)
    for j in range(len(lines)):
        tokens, lines[j] = lines[j], None
        n_items = pc.subtract(pc.list_value_length(tokens), 1).to_numpy(zero_copy_only=False)
        user_tokens = pc.list_element(tokens, 0).take(pa.array(np.repeat(np.arange(len(tokens)), n_items)))
        item_tokens = pc.list_flatten(pc.list_slice(tokens, 1))
        out[USER].append(parse_id_auto(user_tokens)[0])
        out[ITEM].append(parse_id_auto(item_tokens)[0])
        out[BEHAVIOR].append(pa.array(np.zeros(len(item_tokens), np.int8)))
    out[TIMESTAMP] = [pa.array(_positions(out[USER]), pa.int64())]
    table = _interactions(out, BEHAVIORS)
    return table, _empty_profiles(table.schema.field(USER).type), [rep]


def _positions(user_chunks: list[pa.Array]) -> np.ndarray:
    """Each event's index in its user's sequence, in file order (a user's later lines continue counting)."""
    types = {c.type for c in user_chunks}
    chunks = [c.cast(pa.string()) for c in user_chunks] if len(types) > 1 else user_chunks
    users = pa.chunked_array(chunks, chunks[0].type if chunks else pa.int64())
    codes = pc.dictionary_encode(users).combine_chunks().indices.to_numpy(zero_copy_only=False)
    order = np.argsort(codes, kind="stable")
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    run_start = np.repeat(starts, np.diff(np.r_[starts, sorted_codes.size]))
    pos = np.empty(codes.size, np.int64)
    pos[order] = np.arange(codes.size, dtype=np.int64) - run_start
    return pos
