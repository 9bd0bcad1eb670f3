"""Describe a file the user is about to send: its type, a thumbnail, its size in pixels, its duration.

This is what the attachment manifest (FILES.md, "Manifest") says about a file besides its bytes, so a
recipient can show a photo's thumbnail, a voice note's length or a video's poster frame before fetching
anything. Pure functions over a path: no network, no clock, no protocol state. It is not a validator of
what peers send: it runs on the sender's own file; the manifest decoder bounds what arrives.

Libraries, and why:

- **Pillow** decodes JPEG, PNG, GIF, WebP, BMP and TIFF and writes the JPEG thumbnail. It is the
  maintained imaging library for Python, ships wheels everywhere and has its own fuzzers; JPEGs are
  decoded at 1/2 to 1/8 scale (``draft``) so a 48-megapixel photo never exists in memory at full size.
- **mutagen** reads durations from container headers without decoding a sample: OGG (Opus, Vorbis,
  FLAC, Speex), MP4/M4A/MOV, MP3 (Xing/VBRI header, else its bitrate), FLAC, WAV, ADTS AAC, AIFF. It is
  pure Python (no native code to break), so it is a hard dependency.
- **PyAV** (``av``, the optional ``media`` extra) decodes one video frame for a poster and reads the
  durations and sizes of WebM/Matroska, which mutagen cannot. Its wheels bundle FFmpeg's libraries, so
  no system tool (ffmpeg, ffprobe) is installed or run. Without it a video still gets its duration when
  mutagen can read it (MP4, MOV), but no poster and no size, and ``MediaInfo.problems`` says so.

Bad media never raises: a corrupt or truncated file, a decompression bomb, a text file named ``.jpg``
all give a ``MediaInfo`` whose ``problems`` say what could not be described. Only an unreadable path
raises (``OSError``), before any decoding.

Memory is bounded: images over ``MAX_IMAGE_PIXELS`` (WebP: ``MAX_WEBP_PIXELS``, AVIF: ``MAX_AVIF_PIXELS``)
are not decoded, and the picture is shrunk in place, never copied at full size. Measured peak RSS of
``describe`` in a fresh process: a 6000x4000 JPEG 24 MiB (decoded at 1/8 scale), an 8000x8000 PNG
268 MiB (PNG has no reduced decode: 4 bytes a pixel), a 4000x4000 WebP 266 MiB, a 4000x4000 AVIF
169 MiB, a 1080p MP4 or WebM 55-59 MiB, a 4K MP4 81 MiB. A video is never read whole: one keyframe is
sought and at most ``MAX_POSTER_FRAMES`` frames decoded after it, the chosen one scaled by FFmpeg
straight to thumbnail size. Thumbnails carry no metadata (no EXIF: no GPS position leaks).
"""

from __future__ import annotations

import dataclasses
import io
import math
import mimetypes
import struct
import warnings
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import mutagen
from mutagen.aac import AAC
from mutagen.aiff import AIFF
from mutagen.asf import ASF
from mutagen.flac import FLAC
from mutagen.mp3 import MP3
from mutagen.mp4 import MP4
from mutagen.oggflac import OggFLAC
from mutagen.oggopus import OggOpus
from mutagen.oggspeex import OggSpeex
from mutagen.oggtheora import OggTheora
from mutagen.oggvorbis import OggVorbis
from mutagen.wave import WAVE
from PIL import Image, ImageDraw, ImageOps

if TYPE_CHECKING:
    import av
    import av.container

__all__ = [
    "MAX_IMAGE_PIXELS",
    "MAX_THUMBNAIL",
    "THUMBNAIL_SIDE",
    "MediaInfo",
    "describe",
    "guess_mime",
    "sample_photo",
    "sample_voice_note",
]

#: Bytes: the thumbnail travels inside a 64 KiB envelope together with the rest of the manifest.
MAX_THUMBNAIL: Final = 24 * 1024
#: Pixels, the longest side of a thumbnail: a chat bubble's width on a phone at 2x.
THUMBNAIL_SIDE: Final = 320
#: Larger images are not decoded (decompression bombs): 64 Mpx is above any phone camera (48-50 Mpx)
#: and bounds a full RGBA decode to 256 MiB.
MAX_IMAGE_PIXELS: Final = 64_000_000
#: Pillow's WebP decoder holds four RGBA copies of a picture (libwebp's canvas, the frame's bytes, a
#: buffer, the image): 16 bytes a pixel, so WebP gets a quarter of the pixels for the same memory.
MAX_WEBP_PIXELS: Final = MAX_IMAGE_PIXELS // 4
#: AVIF (libavif's YUV planes and an RGB copy) measured at ~8.7 bytes a pixel: half the pixels.
MAX_AVIF_PIXELS: Final = MAX_IMAGE_PIXELS // 2
#: Bytes read to sniff a type: enough for an MP4 ``ftyp`` box, an EBML header and an OGG first page.
SNIFF_BYTES: Final = 4096
#: Seconds: the poster is the frame shown at this time (the first frames often fade in from black),
#: or half the duration of a shorter video.
POSTER_AT: Final = 1.0
#: Frames decoded after the seek before settling for the last one. The seek lands on the keyframe at or
#: before ``POSTER_AT``, so reaching it takes at most a second of frames (30-60 for phone video, 120 for
#: slow motion); this bounds the work of a file whose timestamps never get there (4K: ~10 ms a frame).
MAX_POSTER_FRAMES: Final = 120
#: Packets demuxed while looking for the poster: a stream whose packets never decode stops here.
MAX_POSTER_PACKETS: Final = 2000
#: JPEG qualities tried at each size, best first, until the thumbnail fits in ``MAX_THUMBNAIL``.
THUMBNAIL_QUALITIES: Final = (80, 65, 50, 35)
#: Longest sides tried, largest first; a 32 px JPEG is under 4 KiB at any quality, so one always fits.
THUMBNAIL_SIDES: Final = (THUMBNAIL_SIDE, 240, 180, 128, 96, 64, 32)

OCTET_STREAM: Final = "application/octet-stream"


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaInfo:
    """What the manifest says about a file besides its bytes."""

    #: The file's type, sniffed from its first bytes, else from its name: "image/jpeg", "audio/ogg".
    mime: str
    #: A JPEG of at most ``MAX_THUMBNAIL`` bytes and ``THUMBNAIL_SIDE`` px: images and video posters.
    thumbnail: bytes | None = None
    #: Pixels of the original image or video as displayed (after its EXIF or display-matrix rotation).
    width: int | None = None
    height: int | None = None
    #: Milliseconds of audio or video.
    duration_ms: int | None = None
    #: Why something could not be described, one sentence each; empty when all went well.
    problems: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.thumbnail is not None and len(self.thumbnail) > MAX_THUMBNAIL:
            raise ValueError(f"thumbnail is {len(self.thumbnail):,} bytes; the limit is {MAX_THUMBNAIL:,}")
        for name in ("width", "height", "duration_ms"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} is {value}; it cannot be negative")


# --- types -------------------------------------------------------------------------------------------

#: ``ftyp`` major brands (ISO base media file format) and the type they mean.
_FTYP_BRANDS: Final[dict[bytes, str]] = {
    brand.encode().ljust(4): mime  # brands are four bytes, space-padded ("qt  ")
    for mime, brands in (
        ("audio/mp4", "M4A M4B M4P F4A"),
        ("video/quicktime", "qt"),
        ("video/3gpp", "3gp4 3gp5 3gp6"),
        ("video/3gpp2", "3g2a"),
        ("image/heic", "heic heix heim heis"),
        ("image/heif", "mif1 msf1"),
        ("image/avif", "avif avis"),
    )
    for brand in brands.split()
}

#: Extensions whose built-in ``mimetypes`` answer differs between Python versions or is missing.
_EXTENSIONS: Final[dict[str, str]] = {
    ".opus": "audio/ogg",
    ".oga": "audio/ogg",
    ".ogg": "audio/ogg",
    ".m4a": "audio/mp4",
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".heic": "image/heic",
    ".heif": "image/heif",
    ".avif": "image/avif",
    ".webp": "image/webp",
    ".weba": "audio/webm",
    ".m4v": "video/mp4",
    ".3gp": "video/3gpp",
    ".flv": "video/x-flv",
    ".m2ts": "video/mp2t",
    ".mts": "video/mp2t",
    ".wmv": "video/x-ms-wmv",
    ".wma": "audio/x-ms-wma",
    ".amr": "audio/amr",
    # ZIP files the name tells apart (Python's built-in table lacks them before 3.13)
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".odt": "application/vnd.oasis.opendocument.text",
    ".ods": "application/vnd.oasis.opendocument.spreadsheet",
    ".odp": "application/vnd.oasis.opendocument.presentation",
    ".epub": "application/epub+zip",
}

#: Every type the magic bytes can tell: a name claiming one of these for content that does not start
#: like it (a text file named ``photo.jpg``) is not believed.
_SNIFFED: Final = frozenset(
    """image/jpeg image/png image/gif image/webp image/bmp image/tiff application/pdf application/zip
    audio/ogg video/ogg audio/mpeg audio/wav audio/flac audio/aac audio/amr audio/amr-wb
    video/webm video/x-matroska video/mp4 video/x-msvideo""".split()  # noqa: SIM905 (a word list reads best)
) | frozenset(_FTYP_BRANDS.values())

#: Types that may start with an ID3 tag too (the tag can be larger than ``SNIFF_BYTES``).
_ID3_TAGGED: Final = frozenset({"audio/flac", "audio/aac", "audio/x-aiff", "audio/aiff"})

_MIMETYPES: Final = mimetypes.MimeTypes()  # the built-in table only: the answer is the same on every host


def guess_mime(path: Path, head: bytes) -> str:
    """The type of a file from its first bytes (``head``), else from its name, else octet-stream.

    A name that claims a type the magic bytes would have recognised is not believed.
    """
    sniffed = _sniff(head)
    by_name = _by_extension(path)
    if sniffed == "application/zip" and by_name is not None and by_name.startswith("application/"):
        return by_name  # DOCX, XLSX, ODT, EPUB, JAR are all ZIP files: the name says which
    if head.startswith(b"ID3") and by_name in _ID3_TAGGED:
        return by_name  # an ID3 tag says MP3 most often, not always
    if sniffed is not None:
        return sniffed
    if by_name is None or by_name in _SNIFFED:
        return OCTET_STREAM
    return by_name


def _by_extension(path: Path) -> str | None:
    suffix = path.suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    mime, _encoding = _MIMETYPES.guess_type(path.name, strict=False)
    return mime


def _sniff(head: bytes) -> str | None:
    """The type the magic bytes at the start of a file say, if any."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video/x-msvideo"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image/tiff"
    if (
        head[:2] == b"BM"
        and len(head) >= 26
        and head[14:18] in (b"\x0c\x00\x00\x00", b"(\x00\x00\x00", b"l\x00\x00\x00", b"|\x00\x00\x00")
    ):
        return "image/bmp"  # "BM" alone is too common a start; the DIB header size makes it a bitmap
    if head.startswith(b"%PDF-"):
        return "application/pdf"
    if head.startswith(b"OggS"):
        return _sniff_ogg(head)
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"#!AMR\n"):
        return "audio/amr"  # old Android voice recorders
    if head.startswith(b"#!AMR-WB\n"):
        return "audio/amr-wb"
    if head.startswith(b"ID3"):
        return "audio/mpeg"
    if head[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(head[8:12], "video/mp4")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in head[:64] else "video/x-matroska"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "application/zip"
    if len(head) >= 4 and head[0] == 0xFF:
        return _sniff_mpeg_audio(head)
    return None


def _sniff_ogg(head: bytes) -> str:
    # The first page carries the first packet of the first stream: its codec's identification header.
    first_page = head[:300]
    if b"\x80theora" in first_page:
        return "video/ogg"
    return "audio/ogg"  # Opus, Vorbis, FLAC and Speex in OGG


def _sniff_mpeg_audio(head: bytes) -> str | None:
    """An MPEG audio frame header (MP3 without ID3) or an ADTS header (raw AAC) at the start."""
    second = head[1]
    if second & 0xF6 == 0xF0:  # 12 sync bits, MPEG-4/2 ADTS, layer 00
        return "audio/aac"
    layer = (second >> 1) & 0x3
    version = (second >> 3) & 0x3
    bitrate = head[2] >> 4
    rate = (head[2] >> 2) & 0x3
    if second & 0xE0 == 0xE0 and layer == 1 and version != 1 and bitrate not in (0, 15) and rate != 3:
        return "audio/mpeg"  # 11 sync bits, layer III, a valid version, bitrate and sample rate
    return None


# --- describe ----------------------------------------------------------------------------------------


def describe(path: Path) -> MediaInfo:
    """What the manifest says about the file at ``path``: type, thumbnail, size, duration.

    Reads the first ``SNIFF_BYTES`` to sniff the type, then as much as the type needs: a whole image
    for its thumbnail, the headers of an audio file, one keyframe's worth of a video. Never raises
    for bad content (see ``MediaInfo.problems``); raises ``OSError`` if ``path`` cannot be read.
    """
    with path.open("rb") as file:
        head = file.read(SNIFF_BYTES)
    mime = guess_mime(path, head)
    problems: tuple[str, ...] = ()
    claimed = _by_extension(path)
    if mime == OCTET_STREAM and claimed is not None and claimed != OCTET_STREAM:
        problems = (f"the name says {claimed} but the content does not start like one",)
    kind = mime.partition("/")[0]
    if kind == "image":
        info = _describe_image(path, mime)
    elif kind == "audio":
        info = _describe_audio(path, mime)
    elif kind == "video":
        info = _describe_video(path, mime)
    else:
        info = MediaInfo(mime=mime)
    return dataclasses.replace(info, problems=problems + info.problems) if problems else info


#: What a parser of a damaged file raises, whichever library it is (never a path error: ``describe``
#: read the file before decoding it).
_PARSE_ERRORS: Final = (OSError, ValueError, EOFError, struct.error)

#: What Pillow raises for content it cannot decode (its own fuzzers expect these, and its AVIF plugin
#: passes libavif's failures on as RuntimeError).
_IMAGE_ERRORS: Final = (*_PARSE_ERRORS, SyntaxError, RuntimeError, Image.DecompressionBombError)

#: The Pillow decoder for each image type: no other is tried on a file (less code facing a hostile file).
_PILLOW_FORMATS: Final[dict[str, str]] = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/bmp": "BMP",
    "image/tiff": "TIFF",
    "image/avif": "AVIF",  # Pillow >= 11.3 wheels bundle libavif
}
#: Formats whose decoder needs more than 4 bytes a pixel: a lower pixel limit for the same memory.
_PIXEL_LIMITS: Final[dict[str, int]] = {"WEBP": MAX_WEBP_PIXELS, "AVIF": MAX_AVIF_PIXELS}

_ORIENTATION_TAG: Final = 0x0112
_QUARTER_TURNS: Final = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height


def _describe_image(path: Path, mime: str) -> MediaInfo:
    pillow_format = _PILLOW_FORMATS.get(mime)
    Image.init()  # registers every plugin this Pillow has (AVIF is missing from older ones)
    if pillow_format is None or pillow_format not in Image.OPEN:
        return MediaInfo(mime=mime, problems=(f"no thumbnail: no {mime} decoder",))
    try:
        with warnings.catch_warnings():
            # Pillow warns (and raises over twice its own limit) for huge images while opening; ours is
            # lower, so a warning means too large: turn it into the exception handled below.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Pillow warns about what it skips in damaged EXIF ("Corrupt EXIF data"); the image is fine.
            warnings.simplefilter("ignore", UserWarning)
            with Image.open(path, formats=[pillow_format]) as image:
                width, height = image.size
                limit = _PIXEL_LIMITS.get(pillow_format, MAX_IMAGE_PIXELS)
                if width * height > limit:
                    return MediaInfo(mime=mime, problems=(_too_many_pixels(width, height, limit),))
                if image.getexif().get(_ORIENTATION_TAG) in _QUARTER_TURNS:
                    width, height = height, width
                image.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))  # JPEG: decode at 1/2..1/8 scale
                ImageOps.exif_transpose(image, in_place=True)  # decodes; no copy when upright already
                thumbnail = _jpeg_thumbnail(image)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        return MediaInfo(mime=mime, problems=(f"no thumbnail: {_reason(exc, path)}",))
    except _IMAGE_ERRORS as exc:
        return MediaInfo(
            mime=mime,
            problems=(f"no thumbnail: the {pillow_format} image does not decode: {_reason(exc, path)}",),
        )
    return MediaInfo(mime=mime, thumbnail=thumbnail, width=width, height=height)


def _reason(exc: Exception, path: Path) -> str:
    """A decoder's message without the local path (the problems may be shown to others)."""
    strerror = getattr(exc, "strerror", None)  # OSError, PyAV's FFmpegError: "Invalid data found ..."
    if isinstance(strerror, str) and strerror:
        return strerror
    return str(exc).replace(str(path), path.name)


def _too_many_pixels(width: int, height: int, limit: int) -> str:
    return f"no thumbnail: {width}x{height} is {width * height:,} pixels; the limit is {limit:,}"


#: Modes Pillow resizes with a real filter; others ("P", "1", "PA") are made RGB first, not resized by
#: nearest neighbour.
_RESIZABLE: Final = frozenset({"RGB", "RGBA", "L", "LA", "CMYK", "I", "F", "I;16"})


def _jpeg_thumbnail(image: Image.Image) -> bytes:
    """A JPEG of ``image`` no longer than ``THUMBNAIL_SIDE`` px and no larger than ``MAX_THUMBNAIL``.

    Shrinks ``image`` in place first: a full-size copy of a large picture is never made.
    """
    if image.mode not in _RESIZABLE:
        image = _flatten(image)
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
    largest = _flatten(image)
    for side in THUMBNAIL_SIDES:
        small = largest
        if side < THUMBNAIL_SIDE:
            small = largest.copy()
            small.thumbnail((side, side), Image.Resampling.LANCZOS)
        for quality in THUMBNAIL_QUALITIES:
            out = io.BytesIO()
            small.save(out, format="JPEG", quality=quality, optimize=True)
            if out.tell() <= MAX_THUMBNAIL:
                return out.getvalue()
    raise AssertionError("a 32 px JPEG is always under MAX_THUMBNAIL")  # see THUMBNAIL_SIDES


def _flatten(image: Image.Image) -> Image.Image:
    """RGB, transparent parts on white (what a chat bubble shows behind a PNG with alpha)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if image.mode.startswith("I;16"):
        image = image.point(lambda value: value / 256).convert("L")  # 16-bit grey: keep the top 8 bits
    elif image.mode in ("I", "F"):  # 32-bit grey of no fixed range (TIFF): stretch what is there
        low, high = image.getextrema()
        assert isinstance(low, int | float) and isinstance(high, int | float)  # one band: two numbers
        scale = 255 / (high - low) if high > low else 1.0
        image = image.point(lambda value: (value - low) * scale).convert("L")
    return image.convert("RGB")


# --- audio and video ---------------------------------------------------------------------------------

#: The mutagen reader(s) for each type: no other is tried on a file.
_MUTAGEN_KINDS: Final[dict[str, Sequence[type[mutagen.FileType]]]] = {
    mime: kinds
    for kinds, mimes in (
        ((OggOpus, OggVorbis, OggFLAC, OggSpeex), "audio/ogg"),
        ((OggTheora,), "video/ogg"),
        ((MP3,), "audio/mpeg"),
        ((MP4,), "audio/mp4 video/mp4 video/quicktime video/3gpp video/3gpp2"),
        ((FLAC,), "audio/flac"),
        ((WAVE,), "audio/wav audio/x-wav"),
        ((AAC,), "audio/aac"),
        ((AIFF,), "audio/aiff audio/x-aiff"),
        ((ASF,), "audio/x-ms-wma video/x-ms-wmv video/x-ms-asf"),
    )
    for mime in mimes.split()
}

#: What mutagen raises for content it cannot parse (``MutagenError`` wraps most, not all, of them).
_TAG_ERRORS: Final = (*_PARSE_ERRORS, mutagen.MutagenError, IndexError, ZeroDivisionError)


def _describe_audio(path: Path, mime: str) -> MediaInfo:
    duration_ms, problem = _mutagen_duration(path, mime)
    if duration_ms is not None or mime in _MUTAGEN_KINDS:
        return MediaInfo(mime=mime, duration_ms=duration_ms, problems=(problem,) if problem else ())
    probe = _probe_with_av(path, mime, want_poster=False)  # audio/webm, audio/3gpp, ...
    if isinstance(probe, str):
        return MediaInfo(mime=mime, problems=(f"no duration: {probe}",))
    if not probe.has_audio and not probe.has_video:
        return MediaInfo(mime=mime, problems=("no duration: no audio stream found",))
    if probe.duration_ms is None:
        return MediaInfo(mime=mime, problems=("no duration: the container does not say",))
    return MediaInfo(mime=mime, duration_ms=probe.duration_ms)


def _mutagen_duration(path: Path, mime: str) -> tuple[int | None, str | None]:
    """The duration mutagen reads from the headers, or why not."""
    kinds = _MUTAGEN_KINDS.get(mime)
    if kinds is None:
        return None, None
    try:
        parsed = mutagen.File(path, options=list(kinds))
        length = None if parsed is None or parsed.info is None else float(parsed.info.length)
    except _TAG_ERRORS as exc:
        return None, f"no duration: the {mime} headers do not parse: {_reason(exc, path)}"
    if length is None:
        return None, f"no duration: not a {mime} file mutagen recognises"
    if not math.isfinite(length) or length < 0:
        return None, f"no duration: the {mime} headers give {length} s"
    return round(length * 1000), None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Probe:
    """What PyAV found in a container."""

    has_video: bool
    has_audio: bool = False
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None
    poster: bytes | None = None
    problems: tuple[str, ...] = ()


def _describe_video(path: Path, mime: str) -> MediaInfo:
    duration_ms, duration_problem = _mutagen_duration(path, mime)
    probe = _probe_with_av(path, mime, want_poster=True)
    if isinstance(probe, str):
        problems = [f"no poster frame: {probe}"]
        if duration_ms is None:
            problems.append(duration_problem or f"no duration: {probe}")
        return MediaInfo(mime=mime, duration_ms=duration_ms, problems=tuple(problems))
    duration_ms = duration_ms if duration_ms is not None else probe.duration_ms
    problems = list(probe.problems)
    if not probe.has_video:
        if probe.has_audio and duration_ms is not None:
            return MediaInfo(mime=mime.replace("video/", "audio/", 1), duration_ms=duration_ms)  # sound only
        problems.append("no poster frame: no video stream found")
    if duration_ms is None:
        problems.append(duration_problem or "no duration: the container does not say")
    return MediaInfo(
        mime=mime,
        thumbnail=probe.poster,
        width=probe.width,
        height=probe.height,
        duration_ms=duration_ms,
        problems=tuple(problems),
    )


#: The FFmpeg demuxer for each type PyAV reads; FFmpeg does not guess (a playlist named .avi is no AVI),
#: and reads local files only (a playlist cannot make it fetch a URL or read another file).
_DEMUXERS: Final[dict[str, str]] = {
    mime: demuxer
    for demuxer, mimes in (
        ("mov", "video/mp4 audio/mp4 video/quicktime video/3gpp video/3gpp2 audio/3gpp"),
        ("matroska", "video/webm audio/webm video/x-matroska audio/x-matroska"),
        ("ogg", "video/ogg"),
        ("avi", "video/x-msvideo"),
        ("mpegts", "video/mp2t"),
        ("mpeg", "video/mpeg"),
        ("flv", "video/x-flv"),
        ("asf", "video/x-ms-wmv video/x-ms-asf"),
        ("amr", "audio/amr audio/amr-wb"),
    )
    for mime in mimes.split()
}
_FFMPEG_OPTIONS: Final = {"protocol_whitelist": "file"}


def _probe_with_av(path: Path, mime: str, *, want_poster: bool) -> _Probe | str:
    """Streams, duration and a poster frame read by PyAV, or why it could not be."""
    demuxer = _DEMUXERS.get(mime)
    if demuxer is None:
        return f"no reader for {mime}"
    try:
        import av  # noqa: PLC0415  (optional, the "media" extra: imported when a video needs it)
    except ImportError:
        return "PyAV is not installed (pip install 'meshchat[media]')"
    try:
        with av.open(
            str(path), mode="r", format=demuxer, options=dict(_FFMPEG_OPTIONS), metadata_errors="replace"
        ) as container:
            duration = container.duration  # microseconds
            duration_ms = round(duration / 1000) if duration is not None and duration >= 0 else None
            if not container.streams.video:
                return _Probe(
                    has_video=False, has_audio=bool(container.streams.audio), duration_ms=duration_ms
                )
            stream = container.streams.video[0]
            context = stream.codec_context
            if context is None:  # PyAV gives no decoder for a codec FFmpeg does not know
                return _Probe(has_video=True, duration_ms=duration_ms, problems=(_NO_DECODER,))
            width, height = context.width, context.height
            if not width or not height:
                return _Probe(has_video=True, duration_ms=duration_ms, problems=(_NO_DECODER,))
            if not want_poster:
                return _Probe(has_video=True, width=width, height=height, duration_ms=duration_ms)
            if width * height > MAX_IMAGE_PIXELS:
                problem = _too_many_pixels(width, height, MAX_IMAGE_PIXELS).replace(
                    "thumbnail", "poster frame"
                )
                return _Probe(has_video=True, duration_ms=duration_ms, problems=(problem,))
            target = POSTER_AT if duration_ms is None else min(POSTER_AT, duration_ms / 2000)
            frame = _poster_frame(container, stream, target)
    except av.FFmpegError as exc:
        return f"the file does not decode: {_reason(exc, path)}"
    if frame is None:
        return _Probe(
            has_video=True, width=width, height=height, duration_ms=duration_ms, problems=(_NO_FRAME,)
        )
    if getattr(frame, "rotation", 0) in (90, -90):
        width, height = height, width  # a phone held upright: landscape frames, turned for display
    poster = _jpeg_thumbnail(_frame_image(frame))
    return _Probe(has_video=True, width=width, height=height, duration_ms=duration_ms, poster=poster)


_NO_DECODER: Final = "no poster frame: no decoder for the video stream"
_NO_FRAME: Final = "no poster frame: no frame of the video decodes"


def _poster_frame(
    container: av.container.InputContainer, stream: av.VideoStream, target: float
) -> av.VideoFrame | None:
    """The frame shown at ``target`` seconds: from the keyframe before it, decode forward to it."""
    import av  # noqa: PLC0415  (optional, see _probe_with_av)

    if stream.time_base is not None and target > 0:
        try:
            container.seek(int(target / stream.time_base), stream=stream, backward=True, any_frame=False)
        except av.FFmpegError:
            container.seek(0)  # not seekable that way: decode from the start
    chosen: av.VideoFrame | None = None
    decoded = 0
    for packets, packet in enumerate(container.demux(stream), start=1):
        if packets > MAX_POSTER_PACKETS or decoded >= MAX_POSTER_FRAMES:
            break
        try:
            frames = packet.decode()
        except av.FFmpegError:
            continue  # a damaged packet: the next keyframe may still decode
        for frame in frames:
            if not isinstance(frame, av.VideoFrame):
                continue
            decoded += 1
            chosen = frame
            if frame.time is None or frame.time >= target:
                return chosen
    return chosen


def _frame_image(frame: av.VideoFrame) -> Image.Image:
    """The frame as an upright RGB image no larger than a thumbnail (FFmpeg scales it, not Pillow)."""
    scale = min(1.0, THUMBNAIL_SIDE / max(frame.width, frame.height, 1))
    small = frame.reformat(
        width=max(1, round(frame.width * scale)), height=max(1, round(frame.height * scale)), format="rgb24"
    )
    plane = small.planes[0]
    image = Image.frombuffer(
        "RGB", (small.width, small.height), bytes(plane), "raw", "RGB", plane.line_size, 1
    )
    rotation: int = getattr(frame, "rotation", 0)  # PyAV before 14 has no display matrix: as stored
    if rotation:
        image = image.rotate(rotation, expand=True)  # counterclockwise degrees, as the display matrix says
    return image


# --- demo helpers ------------------------------------------------------------------------------------


def sample_photo(path: Path) -> Path:
    """Write a 1600x1200 JPEG photo-like picture to ``path`` (for the examples; no file ships with them)."""
    width, height = 1600, 1200
    sky = Image.linear_gradient("L").resize((width, height)).point(lambda v: 255 - v // 2)
    image = Image.merge("RGB", (sky.point(lambda v: v // 3), sky.point(lambda v: v * 2 // 3), sky))
    draw = ImageDraw.Draw(image)
    draw.ellipse((1150, 150, 1400, 400), fill=(255, 214, 90))  # the sun
    draw.polygon([(0, 1200), (500, 550), (900, 1000), (1250, 700), (1600, 1200)], fill=(60, 110, 70))
    draw.rectangle((0, 1050, 1600, 1200), fill=(40, 80, 150))  # a lake
    image.save(path, format="JPEG", quality=85)
    return path


#: Hz: Opus's native rate; a voice note is mono.
_VOICE_RATE: Final = 48_000


def sample_voice_note(path: Path, seconds: float = 3.0) -> Path:
    """Write an OGG/Opus voice note of ``seconds`` (a hummed tune) to ``path``, for the examples.

    Needs PyAV (the ``media`` extra) for its Opus encoder; raises ``ImportError`` saying so without it.
    """
    try:
        import av  # noqa: PLC0415  (optional, see _probe_with_av)
    except ImportError as exc:
        raise ImportError(
            "sample_voice_note needs PyAV to encode Opus: pip install 'meshchat[media]'"
        ) from exc
    total = round(seconds * _VOICE_RATE)
    notes = (262.0, 294.0, 330.0, 349.0, 392.0)
    samples = array("h", bytes(2 * total))
    for i in range(total):
        t = i / _VOICE_RATE
        pitch = notes[int(t * 2) % len(notes)]  # a new note every half second
        envelope = min(1.0, 4 * (t * 2 % 1), 4 * (1 - t * 2 % 1))  # no clicks between notes
        samples[i] = int(9000 * envelope * math.sin(2 * math.pi * pitch * t))
    with av.open(str(path), mode="w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=_VOICE_RATE, layout="mono")
        frame = av.AudioFrame(format="s16", layout="mono", samples=total)
        frame.planes[0].update(samples.tobytes())
        frame.sample_rate = _VOICE_RATE
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path
