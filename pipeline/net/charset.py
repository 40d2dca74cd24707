"""The character encoding of a fetched HTML page, decided as browsers decide it (WHATWG HTML, "encoding sniffing").

In order, the first that answers wins:

1. a byte order mark (UTF-8, UTF-16BE, UTF-16LE), which overrides everything;
2. the `charset` of the HTTP Content-Type header;
3. the "prescan" of the first 1024 bytes: `<meta charset="…">`, or `<meta http-equiv="Content-Type"
   content="…; charset=…">` (UTF-16 named there means UTF-8, as the standard says);
4. an XML declaration (`<?xml version="1.0" encoding="…"?>`) at the very start, for XHTML pages;
5. bytes that are valid UTF-8 are UTF-8; else charset-normalizer's guess, where windows-1252 wins a tie (it is the
   most common legacy encoding, and the standard's default); else windows-1252.

Labels are read as the WHATWG Encoding standard maps them: `latin1`, `iso-8859-1` and `ascii` mean windows-1252
(pages labelled so use its printable 0x80-0x9F), `gb2312` means GBK, `shift_jis` Microsoft's CP932, and so on;
an unknown label is ignored and the next step decides.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Literal

import charset_normalizer

PRESCAN_BYTES = 1024
DETECT_BYTES = 256 * 1024  # charset-normalizer reads chunks spread over what it is given: enough to decide, bounded
TIE = 0.01  # two guesses whose chaos and coherence differ by less than this read the same to the detector

Source = Literal["bom", "header", "meta", "xml", "utf-8", "detected", "default"]

# WHATWG encoding name -> Python codec; None for the "replacement" encoding (labels that must never be decoded).
_ENCODINGS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "utf-8": ("utf-8", ("unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8", "utf-8", "utf8", "x-unicode20utf8")),
    "ibm866": ("cp866", ("866", "cp866", "csibm866", "ibm866")),
    "iso-8859-2": (
        "iso8859-2",
        ("csisolatin2", "iso-8859-2", "iso-ir-101", "iso8859-2", "iso88592", "iso_8859-2", "iso_8859-2:1987", "l2")
        + ("latin2",),
    ),
    "iso-8859-3": (
        "iso8859-3",
        ("csisolatin3", "iso-8859-3", "iso-ir-109", "iso8859-3", "iso88593", "iso_8859-3", "iso_8859-3:1988", "l3")
        + ("latin3",),
    ),
    "iso-8859-4": (
        "iso8859-4",
        ("csisolatin4", "iso-8859-4", "iso-ir-110", "iso8859-4", "iso88594", "iso_8859-4", "iso_8859-4:1988", "l4")
        + ("latin4",),
    ),
    "iso-8859-5": (
        "iso8859-5",
        ("csisolatincyrillic", "cyrillic", "iso-8859-5", "iso-ir-144", "iso8859-5", "iso88595", "iso_8859-5")
        + ("iso_8859-5:1988",),
    ),
    "iso-8859-6": (
        "iso8859-6",
        ("arabic", "asmo-708", "csiso88596e", "csiso88596i", "csisolatinarabic", "ecma-114", "iso-8859-6")
        + ("iso-8859-6-e", "iso-8859-6-i", "iso-ir-127", "iso8859-6", "iso88596", "iso_8859-6", "iso_8859-6:1987"),
    ),
    "iso-8859-7": (
        "iso8859-7",
        ("csisolatingreek", "ecma-118", "elot_928", "greek", "greek8", "iso-8859-7", "iso-ir-126", "iso8859-7")
        + ("iso88597", "iso_8859-7", "iso_8859-7:1987", "sun_eu_greek"),
    ),
    "iso-8859-8": (
        "iso8859-8",
        ("csiso88598e", "csisolatinhebrew", "hebrew", "iso-8859-8", "iso-8859-8-e", "iso-ir-138", "iso8859-8")
        + ("iso88598", "iso_8859-8", "iso_8859-8:1988", "visual"),
    ),
    "iso-8859-8-i": ("iso8859-8", ("csiso88598i", "iso-8859-8-i", "logical")),
    "iso-8859-10": (
        "iso8859-10",
        ("csisolatin6", "iso-8859-10", "iso-ir-157", "iso8859-10", "iso885910", "l6", "latin6"),
    ),
    "iso-8859-13": ("iso8859-13", ("iso-8859-13", "iso8859-13", "iso885913")),
    "iso-8859-14": ("iso8859-14", ("iso-8859-14", "iso8859-14", "iso885914")),
    "iso-8859-15": (
        "iso8859-15",
        ("csisolatin9", "iso-8859-15", "iso8859-15", "iso885915", "iso_8859-15", "l9"),
    ),
    "iso-8859-16": ("iso8859-16", ("iso-8859-16",)),
    "koi8-r": ("koi8-r", ("cskoi8r", "koi", "koi8", "koi8-r", "koi8_r")),
    "koi8-u": ("koi8-u", ("koi8-ru", "koi8-u")),
    "macintosh": ("mac-roman", ("csmacintosh", "mac", "macintosh", "x-mac-roman")),
    "windows-874": ("cp874", ("dos-874", "iso-8859-11", "iso8859-11", "iso885911", "tis-620", "windows-874")),
    **{
        f"windows-125{n}": (f"cp125{n}", (f"cp125{n}", f"windows-125{n}", f"x-cp125{n}")) for n in (0, 1, 3, 5, 6, 7, 8)
    },
    "windows-1252": (
        "cp1252",
        ("ansi_x3.4-1968", "ascii", "cp1252", "cp819", "csisolatin1", "ibm819", "iso-8859-1", "iso-ir-100")
        + ("iso8859-1", "iso88591", "iso_8859-1", "iso_8859-1:1987", "l1", "latin1", "us-ascii", "windows-1252")
        + ("x-cp1252",),
    ),
    "windows-1254": (
        "cp1254",
        ("cp1254", "csisolatin5", "iso-8859-9", "iso-ir-148", "iso8859-9", "iso88599", "iso_8859-9")
        + ("iso_8859-9:1989", "l5", "latin5", "windows-1254", "x-cp1254"),
    ),
    "x-mac-cyrillic": ("mac-cyrillic", ("x-mac-cyrillic", "x-mac-ukrainian")),
    "gbk": (
        "gb18030",  # the standard decodes GBK with the gb18030 decoder
        ("chinese", "csgb2312", "csiso58gb231280", "gb2312", "gb_2312", "gb_2312-80", "gbk", "iso-ir-58", "x-gbk"),
    ),
    "gb18030": ("gb18030", ("gb18030",)),
    "big5": ("big5hkscs", ("big5", "big5-hkscs", "cn-big5", "csbig5", "x-x-big5")),
    "euc-jp": ("euc-jp", ("cseucpkdfmtjapanese", "euc-jp", "x-euc-jp")),
    "iso-2022-jp": ("iso2022-jp", ("csiso2022jp", "iso-2022-jp")),
    "shift_jis": (
        "cp932",
        ("csshiftjis", "ms932", "ms_kanji", "shift-jis", "shift_jis", "sjis", "windows-31j", "x-sjis"),
    ),
    "euc-kr": (
        "cp949",
        ("cseuckr", "csksc56011987", "euc-kr", "iso-ir-149", "korean", "ks_c_5601-1987", "ks_c_5601-1989")
        + ("ksc5601", "ksc_5601", "windows-949"),
    ),
    "replacement": (None, ("csiso2022kr", "hz-gb-2312", "iso-2022-cn", "iso-2022-cn-ext", "iso-2022-kr")),
    "utf-16be": ("utf-16-be", ("unicodefffe", "utf-16be")),
    "utf-16le": (
        "utf-16-le",
        ("csunicode", "iso-10646-ucs-2", "ucs-2", "unicode", "unicodefeff", "utf-16", "utf-16le"),
    ),
    "x-user-defined": ("cp1252", ("x-user-defined",)),  # its bytes 0x80+ are private-use: no text is lost this way
}
LABELS: dict[str, str] = {label: name for name, (_, labels) in _ENCODINGS.items() for label in labels}
CODECS: dict[str, str | None] = {name: codec for name, (codec, _) in _ENCODINGS.items()}
# what the detector may answer: the encodings a web page can have (never UTF-7, EBCDIC or UTF-32)
_WEB_CODECS = {codecs.lookup(codec).name for codec in CODECS.values() if codec}
_WINDOWS_1252 = codecs.lookup("cp1252").name
_LATIN_1_FAMILY = {codecs.lookup(name).name for name in ("latin-1", "ascii", "cp1252")}

BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_BE, "utf-16be"), (codecs.BOM_UTF16_LE, "utf-16le"))
SPACE = b"\t\n\x0c\r "
SPACE_OR_SLASH = SPACE + b"/"


@dataclass(frozen=True)
class Decoded:
    text: str
    encoding: str  # the WHATWG name ("windows-1252"), or the codec the detector chose
    source: Source


def encoding_of_label(label: str | bytes | None) -> str | None:
    """The WHATWG encoding a label names ("Latin1 " -> "windows-1252"), None for an unknown label."""
    if label is None:
        return None
    if isinstance(label, bytes):
        label = label.decode("ascii", "replace")
    return LABELS.get(label.strip("\t\n\x0c\r ").lower())


def decode_html(body: bytes, header_charset: str | None = None) -> Decoded:
    """`body` as text, in the encoding a browser would choose (see the module docstring). Undecodable bytes become
    U+FFFD; windows-1252's five unassigned bytes become the C1 controls, as in browsers."""
    for bom, name in BOMS:
        if body.startswith(bom):
            return _decoded(body[len(bom) :], name, "bom")
    declared: tuple[tuple[Source, str | None], ...] = (
        ("header", _usable(encoding_of_label(header_charset))),
        ("meta", prescan(body[:PRESCAN_BYTES])),
        ("xml", _xml_declared(body[:PRESCAN_BYTES])),
    )
    for source, encoding in declared:
        if encoding is not None:
            return _decoded(body, encoding, source)
    return _guess(body)


def _usable(name: str | None) -> str | None:
    return None if name is None or CODECS[name] is None else name


def _decoded(body: bytes, name: str, source: Source) -> Decoded:
    codec = CODECS.get(name) or name  # a WHATWG name, or a codec the detector named
    errors = "whatwg-windows-1252" if codecs.lookup(codec).name == _WINDOWS_1252 else "replace"
    return Decoded(body.decode(codec, errors), name, source)


def _c1_for_unassigned(error: UnicodeError) -> tuple[str, int]:
    """windows-1252's unassigned bytes (0x81, 0x8D, 0x8F, 0x90, 0x9D) decode to the C1 control of the same number."""
    assert isinstance(error, UnicodeDecodeError)
    return "".join(chr(byte) for byte in error.object[error.start : error.end]), error.end


codecs.register_error("whatwg-windows-1252", _c1_for_unassigned)


def _guess(body: bytes) -> Decoded:
    """No declaration: UTF-8 when the bytes are valid UTF-8, else the detector's answer, else windows-1252."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(body, final=False)  # a cap may have cut the last character
        return _decoded(body, "utf-8", "utf-8")
    except UnicodeDecodeError:
        pass
    codec = detect(body[:DETECT_BYTES])
    if codec is None or codec == _WINDOWS_1252:
        return _decoded(body, "windows-1252", "detected" if codec else "default")
    return _decoded(body, codec, "detected")


def detect(sample: bytes) -> str | None:
    """charset-normalizer's guess (a Python codec name) among the encodings web pages use; windows-1252 when it
    reads as well as the best guess (the detector cannot tell Western European legacy encodings apart on short
    texts, and windows-1252 is by far the most common of them)."""
    matches = [m for m in charset_normalizer.from_bytes(sample) if codecs.lookup(m.encoding).name in _WEB_CODECS]
    if not matches:
        return None
    best = matches[0]
    for match in matches:
        ties = match.chaos <= best.chaos + TIE and match.coherence >= best.coherence - TIE
        if ties and any(codecs.lookup(name).name in _LATIN_1_FAMILY for name in match.could_be_from_charset):
            return _WINDOWS_1252
    return codecs.lookup(best.encoding).name


# --- the prescan (WHATWG HTML 13.2.3.2 "prescan a byte stream to determine its encoding") ---------------------------


def prescan(head: bytes) -> str | None:
    """The encoding a `<meta>` in `head` (the first 1024 bytes) declares, or None."""
    position, end = 0, len(head)
    while position < end:
        if head.startswith(b"<!--", position):
            close = head.find(b"-->", position + 2)  # "<!-->" is a whole comment
            if close < 0:
                return None
            position = close + 3
            continue
        if head[position : position + 5].lower() == b"<meta" and head[position + 5 : position + 6] in _SPACE_SLASH:
            found, position = _meta(head, position + 6)
            if found is not None:
                return found
            continue
        if head[position : position + 1] == b"<" and _starts_tag(head, position + 1):
            position = _skip_tag(head, position)
            if position < 0:
                return None
            continue
        if head.startswith((b"<!", b"</", b"<?"), position):
            close = head.find(b">", position + 2)
            if close < 0:
                return None
            position = close + 1
            continue
        position += 1
    return None


_SPACE_SLASH = {bytes([b]) for b in SPACE_OR_SLASH}


def _starts_tag(head: bytes, position: int) -> bool:
    """A letter, or "/" and a letter: the start (or end) tag of an element."""
    following = head[position : position + 2]
    if following[:1].isalpha():
        return True
    return following[:1] == b"/" and following[1:2].isalpha()


def _skip_tag(head: bytes, position: int) -> int:
    """Past a tag and its attributes (an attribute value may hide a ">"); -1 when the head ends inside it."""
    while position < len(head) and head[position] not in b"\t\n\x0c\r >":
        position += 1
    while True:
        attribute, position = _attribute(head, position)
        if attribute is None:
            return position if position >= 0 else -1


def _meta(head: bytes, position: int) -> tuple[str | None, int]:
    """(the encoding this <meta> declares or None, the position after it)."""
    seen: set[bytes] = set()
    got_pragma = False
    need_pragma: bool | None = None
    charset: str | None = None
    while True:
        attribute, position = _attribute(head, position)
        if attribute is None:
            break
        name, value = attribute
        if name in seen:
            continue
        seen.add(name)
        if name == b"http-equiv" and value == b"content-type":
            got_pragma = True
        elif name == b"content" and charset is None:
            declared = charset_in_content(value)
            if declared is not None:
                charset, need_pragma = encoding_of_label(declared), True
        elif name == b"charset":
            charset, need_pragma = encoding_of_label(value), False
    if position < 0:
        return None, len(head)  # the head ended inside the tag
    if need_pragma is None or (need_pragma and not got_pragma) or charset is None:
        return None, position
    if charset in ("utf-16be", "utf-16le"):
        return "utf-8", position  # a page that could read its own <meta> as ASCII is not UTF-16
    if charset == "x-user-defined":
        return "windows-1252", position
    return _usable(charset), position


def _attribute(head: bytes, position: int) -> tuple[tuple[bytes, bytes] | None, int]:
    """WHATWG "get an attribute": ((name, value) lower-cased, next position); (None, position) at ">" and
    (None, -1) when the head ends first."""
    end = len(head)
    while position < end and head[position] in SPACE_OR_SLASH:
        position += 1
    if position >= end:
        return None, -1
    if head[position] == ord(">"):
        return None, position + 1
    name = bytearray()
    while True:
        if position >= end:
            return None, -1
        byte = head[position]
        if byte == ord("=") and name:  # "=" as a name's first byte is part of the name
            position += 1
            break
        if byte in SPACE:
            while position < end and head[position] in SPACE:
                position += 1
            if position >= end:
                return None, -1
            if head[position] != ord("="):
                return (bytes(name).lower(), b""), position
            position += 1
            break
        if byte in b"/>":
            return (bytes(name).lower(), b""), position
        name.append(byte)
        position += 1
    while position < end and head[position] in SPACE:
        position += 1
    if position >= end:
        return None, -1
    value = bytearray()
    quote = head[position]
    if quote in b"\"'":
        close = head.find(bytes([quote]), position + 1)
        if close < 0:
            return None, -1
        return (bytes(name).lower(), head[position + 1 : close].lower()), close + 1
    if quote == ord(">"):
        return (bytes(name).lower(), b""), position
    while position < end and head[position] not in SPACE and head[position] != ord(">"):
        value.append(head[position])
        position += 1
    if position >= end:
        return None, -1
    return (bytes(name).lower(), bytes(value).lower()), position


def charset_in_content(content: bytes) -> bytes | None:
    """WHATWG "extract a character encoding from a meta element": the label after `charset=` in a content value
    ("text/html; charset=windows-1252"), quoted or not; None when there is none or its quote is not closed."""
    position = 0
    lowered = content.lower()
    while True:
        found = lowered.find(b"charset", position)
        if found < 0:
            return None
        position = found + len(b"charset")
        while position < len(content) and content[position] in SPACE:
            position += 1
        if content[position : position + 1] != b"=":
            continue  # "charsetx", or "charset" without "=": look further on
        position += 1
        while position < len(content) and content[position] in SPACE:
            position += 1
        if position >= len(content):
            return None
        first = content[position]
        if first in b"\"'":
            close = content.find(bytes([first]), position + 1)
            return content[position + 1 : close] if close >= 0 else None
        stop = position
        while stop < len(content) and content[stop] not in SPACE and content[stop] != ord(";"):
            stop += 1
        return content[position:stop] or None


def _xml_declared(head: bytes) -> str | None:
    """The encoding of an XML declaration at the very start (`<?xml version="1.0" encoding="…"?>`), or None."""
    if not head.startswith(b"<?xml"):
        return None
    close = head.find(b"?>")
    declaration = head[:close] if close > 0 else b""
    found = declaration.lower().find(b"encoding")
    if found < 0:
        return None
    rest = declaration[found + len(b"encoding") :].lstrip(SPACE)
    if not rest.startswith(b"="):
        return None
    rest = rest[1:].lstrip(SPACE)
    if not rest[:1] or rest[:1] not in b"\"'":
        return None
    label = rest[1:].split(rest[:1], 1)[0]
    name = _usable(encoding_of_label(label))
    return "utf-8" if name in ("utf-16be", "utf-16le") else name  # it was read as ASCII: it is not UTF-16
