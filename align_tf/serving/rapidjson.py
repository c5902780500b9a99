"""JSON as TF Serving's REST API reads and quotes it: rapidjson 1.1.0, as `ParseJson` in
tensorflow_serving/util/json_tensor.cc calls it (kParseIterativeFlag | kParseNanAndInfFlag |
kParseStopWhenDoneFlag, no encoding validation), and `JsonValueToDebugString`, the way its error
messages quote a JSON value.

`parse` takes the fast road (Python's json, in C) for ordinary documents and this module's own
iterative parser for the rest: documents nested deeper than Python's recursion allows (rapidjson
parses any depth; memory stays proportional to the body, which the server bounds), documents
with `\\uD800`-`\\uDFFF` escapes (a lone high surrogate is refused, a lone low one becomes its
three UTF-8 bytes, as rapidjson does), `Inf` literals, and every document Python refuses, so
that errors carry rapidjson's words and byte offset ("JSON Parse error: Invalid value. at
offset: 0").

Strings come back as Python `str` decoded from UTF-8 with "surrogateescape": bytes that are not
UTF-8 (rapidjson passes them through) become U+DC80..U+DCFF and encode back to the same bytes.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal

__all__ = ["JsonParseError", "debug_string", "parse"]

_INT64 = (-2 ** 63, 2 ** 63 - 1)
_UINT64_MAX = 2 ** 64 - 1

# rapidjson/error/en.h, GetParseError_En.
EMPTY = "The document is empty."
INVALID_VALUE = "Invalid value."
MISS_NAME = "Missing a name for object member."
MISS_COLON = "Missing a colon after a name of object member."
MISS_COMMA_OR_CURLY = "Missing a comma or '}' after an object member."
MISS_COMMA_OR_SQUARE = "Missing a comma or ']' after an array element."
BAD_HEX = "Incorrect hex digit after \\u escape in string."
BAD_SURROGATE = "The surrogate pair in string is invalid."
BAD_ESCAPE = "Invalid escape character in string."
MISS_QUOTE = "Missing a closing quotation mark in string."
TOO_BIG = "Number too big to be stored in double."
MISS_FRACTION = "Miss fraction part in number."
MISS_EXPONENT = "Miss exponent in number."


class JsonParseError(ValueError):
    """A document rapidjson refuses: its message and the byte offset it stopped at."""

    def __init__(self, message: str, offset: int):
        super().__init__(f"{message} at offset: {offset}")
        self.message, self.offset = message, offset


# Surrogate escapes: Python's json decodes them its own way (a lone high one passes).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_WS = re.compile(rb"[ \t\n\r]*")
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(\.[0-9]*)?(?:[eE][+-]?[0-9]*)?")
_PLAIN_STRING = re.compile(rb'[^"\\\x00-\x1f]*')


class _Overflow(Exception):
    """A number the fast road read as infinite: rapidjson's parser words the error."""


def _double(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Overflow
    return value


def _integer(text: str):
    """rapidjson keeps integers that fit 64 bits (signed or not) and reads others as doubles."""
    value = int(text)
    return value if _INT64[0] <= value <= _UINT64_MAX else _double(text)


_DECODER = json.JSONDecoder(parse_float=_double, parse_int=_integer)


def parse(data: bytes):
    """The document `data` holds, as rapidjson reads it; JsonParseError when it refuses it.
    What follows the first complete value is ignored (kParseStopWhenDoneFlag)."""
    if not _SURROGATE_ESCAPE.search(data):
        text = data.decode("utf-8", "surrogateescape")
        try:
            return _DECODER.raw_decode(text, len(text) - len(text.lstrip(" \t\n\r")))[0]
        except (ValueError, RecursionError, _Overflow):
            pass  # rapidjson's own reading decides (deep nesting parses, errors get its words)
    return _Parser(data).document()


class _Parser:
    """rapidjson's iterative parser, over bytes."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def _ws(self) -> None:
        self.pos = _WS.match(self.data, self.pos).end()

    def _peek(self) -> int:
        return self.data[self.pos] if self.pos < len(self.data) else -1

    def document(self):
        self._ws()
        if self.pos >= len(self.data):
            raise JsonParseError(EMPTY, self.pos)
        # A stack of open containers: [list] or [dict, pending key].
        stack: list = []
        while True:
            c = self._peek()
            if c == ord("["):
                self.pos += 1
                self._ws()
                if self._peek() == ord("]"):
                    self.pos += 1
                    value = []
                else:
                    stack.append([[]])
                    continue
            elif c == ord("{"):
                self.pos += 1
                self._ws()
                if self._peek() == ord("}"):
                    self.pos += 1
                    value = {}
                else:
                    stack.append([{}, self._key()])
                    continue
            else:
                value = self._scalar()
            # A value is complete: hand it to its container, closing containers that end here.
            while True:
                if not stack:
                    return value
                top = stack[-1]
                container = top[0]
                self._ws()
                c = self._peek()
                if isinstance(container, list):
                    container.append(value)
                    if c == ord(","):
                        self.pos += 1
                        self._ws()
                        if self._peek() in (ord("]"), -1):
                            raise JsonParseError(INVALID_VALUE, self.pos)
                        break
                    if c != ord("]"):
                        raise JsonParseError(MISS_COMMA_OR_SQUARE, self.pos)
                else:
                    container.setdefault(top[1], value)  # rapidjson's FindMember finds the first
                    if c == ord(","):
                        self.pos += 1
                        self._ws()
                        top[1] = self._key()
                        break
                    if c != ord("}"):
                        raise JsonParseError(MISS_COMMA_OR_CURLY, self.pos)
                self.pos += 1
                value = container
                stack.pop()

    def _key(self) -> str:
        if self._peek() != ord('"'):
            raise JsonParseError(MISS_NAME, self.pos)
        key = self._string()
        self._ws()
        if self._peek() != ord(":"):
            raise JsonParseError(MISS_COLON, self.pos)
        self.pos += 1
        self._ws()
        if self.pos >= len(self.data):
            raise JsonParseError(INVALID_VALUE, self.pos)
        return key

    def _scalar(self):
        c = self._peek()
        if c == ord('"'):
            return self._string()
        for word, value in ((b"null", None), (b"true", True), (b"false", False)):
            if c == word[0]:
                for i, ch in enumerate(word):
                    if self.pos + i >= len(self.data) or self.data[self.pos + i] != ch:
                        raise JsonParseError(INVALID_VALUE, self.pos + i)
                self.pos += len(word)
                return value
        return self._number()

    def _number(self):
        start, data = self.pos, self.data
        minus = data.startswith(b"-", start)
        at = start + minus
        for word, value in ((b"NaN", math.nan), (b"Infinity", math.inf), (b"Inf", math.inf)):
            if data.startswith(word, at):
                self.pos = at + len(word)
                return -value if minus else value
        if at < len(data) and data[at] in b"NI":  # a literal begun and not finished
            raise JsonParseError(INVALID_VALUE, at + 1)
        match = _NUMBER.match(data, start)
        if match is None or match.end() == at:
            raise JsonParseError(INVALID_VALUE, at)
        text = match.group()
        if match.group(1) == b".":
            raise JsonParseError(MISS_FRACTION, start + text.index(b".") + 1)
        if len(text) > 1 and text[-1:] in (b"e", b"E", b"+", b"-"):
            raise JsonParseError(MISS_EXPONENT, match.end())
        self.pos = match.end()
        if b"." not in text and b"e" not in text and b"E" not in text:
            number = int(text)
            if _INT64[0] <= number <= _UINT64_MAX:
                return number
        value = float(text)
        if math.isinf(value):
            raise JsonParseError(TOO_BIG, start)
        return value

    def _string(self) -> str:
        data = self.data
        self.pos += 1  # the opening quote
        out = bytearray()
        while True:
            plain = _PLAIN_STRING.match(data, self.pos)
            out += data[self.pos:plain.end()]
            self.pos = plain.end()
            if self.pos >= len(data):
                raise JsonParseError(MISS_QUOTE, self.pos)
            c = data[self.pos]
            if c == ord('"'):
                self.pos += 1
                return out.decode("utf-8", "surrogateescape")
            if c < 0x20:
                raise JsonParseError(MISS_QUOTE if c == 0 else BAD_ESCAPE, self.pos)
            escape_at = self.pos  # a backslash
            e = data[self.pos + 1] if self.pos + 1 < len(data) else -1
            simple = {ord('"'): b'"', ord("\\"): b"\\", ord("/"): b"/", ord("b"): b"\b",
                      ord("f"): b"\f", ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t"}
            if e in simple:
                out += simple[e]
                self.pos += 2
                continue
            if e != ord("u"):
                raise JsonParseError(BAD_ESCAPE, escape_at)
            code = self._hex4(self.pos + 2, escape_at)
            self.pos += 6
            if 0xD800 <= code <= 0xDBFF:  # a high surrogate needs a low one next
                if not data.startswith(b"\\u", self.pos):
                    raise JsonParseError(BAD_SURROGATE, escape_at)
                low = self._hex4(self.pos + 2, escape_at)
                if not 0xDC00 <= low <= 0xDFFF:
                    raise JsonParseError(BAD_SURROGATE, escape_at)
                self.pos += 6
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
            out += chr(code).encode("utf-8", "surrogatepass")  # a lone low surrogate: ED xx xx

    def _hex4(self, at: int, escape_at: int) -> int:
        digits = self.data[at:at + 4]
        if len(digits) != 4 or not all(ch in b"0123456789abcdefABCDEF" for ch in digits):
            raise JsonParseError(BAD_HEX, escape_at)
        return int(digits, 16)


# -- JsonValueToDebugString ---------------------------------------------------------------------
MAX_DEBUG_BYTES = 256
_ESCAPES = {i: "\\u%04X" % i for i in range(0x20)}
_ESCAPES.update({0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r",
                 ord('"'): '\\"', ord("\\"): "\\\\"})


def quote(text: str) -> str:
    """A JSON string as rapidjson's Writer writes it: `"` and `\\` escaped, control characters
    as \\b \\t \\n \\f \\r or \\u00XX (upper-case hex), everything else as it is."""
    return '"' + text.translate(_ESCAPES) + '"'


def number_text(value) -> str:
    """A number as rapidjson's Writer writes it: integers as they are, doubles in their
    shortest form with Prettify's layout (1.0, 0.001, 1e30, 1.5e-7)."""
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + "0.0"
    _, digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    point = len(digits) + exponent  # value = 0.<digits> x 10**point
    length, k = len(digits), point
    if length <= k <= 21:
        text = digits + "0" * (k - length) + ".0"
    elif 0 < k <= 21:
        text = digits[:k] + "." + digits[k:]
    elif -6 < k <= 0:
        text = "0." + "0" * -k + digits
    elif length == 1:
        text = f"{digits}e{k - 1}"
    else:
        text = f"{digits[0]}.{digits[1:]}e{k - 1}"
    return sign + text


def debug_string(value, limit: int = MAX_DEBUG_BYTES) -> str:
    """JsonValueToDebugString: `value` written by rapidjson's PrettyWriter (objects one member
    a line, four-space indents; arrays on one line), cut off once `limit` bytes are written.
    Iterative: a value nested a million deep is quoted in its first `limit` bytes."""
    out: list[str] = []
    size = 0
    # Frames: (container, iterator, count of items written).
    stack: list = []
    pending = [("value", value)]

    def put(text: str) -> bool:
        nonlocal size
        if size >= limit:
            return False
        out.append(text)
        size += len(text.encode("utf-8", "surrogateescape"))
        return True

    def prefix() -> str:
        if not stack:
            return ""
        container, _, count = stack[-1]
        indent = "    " * len(stack)
        if isinstance(container, list):
            return ", " if count else ""
        return (",\n" if count else "\n") + indent

    while True:
        if pending:
            kind, item = pending.pop()
            text = prefix()
            if stack and isinstance(stack[-1][0], dict):
                key, item = item
                text += quote(key) + ": "
            if stack:
                stack[-1][2] += 1
            if isinstance(item, dict):
                if not put(text + "{"):
                    break
                stack.append([item, iter(item.items()), 0])
            elif isinstance(item, list):
                if not put(text + "["):
                    break
                stack.append([item, iter(item), 0])
            else:
                scalar = "null" if item is None else ("true" if item is True else "false") \
                    if isinstance(item, bool) else quote(item) if isinstance(item, str) else number_text(item)
                if not put(text + scalar):
                    break
            continue
        if not stack:
            break
        container, items, count = stack[-1]
        nxt = next(items, _END)
        if nxt is not _END:
            pending.append(("value", nxt))
            continue
        stack.pop()
        if isinstance(container, dict):
            close = ("\n" + "    " * len(stack) + "}") if count else "}"
        else:
            close = "]"
        if not put(close):
            break
    return "".join(out)


_END = object()
