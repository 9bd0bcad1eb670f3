"""Real media files written at test time (no binary blobs in git), with Pillow and PyAV's encoders.

Each ``make_*`` writes a file of a known size or duration to ``path`` and returns ``path``. PyAV's wheels
bundle FFmpeg; the encoders are picked from what the installed wheel has (``pick_encoder``), so a wheel
without libx264 still yields an MP4 (MPEG-4 Part 2).
"""

from __future__ import annotations

import contextlib
import math
import random
import struct
import zlib
from array import array
from pathlib import Path

import av
from PIL import Image, ImageDraw

#: Encoders by preference for each job; the first the installed FFmpeg has is used.
AUDIO_ENCODERS = {
    "opus": ("libopus", "opus"),
    "aac": ("aac", "libfdk_aac"),
    "mp3": ("libmp3lame", "mp3"),
    "flac": ("flac",),
    "vorbis": ("libvorbis", "vorbis"),
    "amr": ("libopencore_amrnb",),
}
VIDEO_ENCODERS = {
    "mp4": ("libx264", "h264", "mpeg4"),
    "webm": ("libvpx-vp9", "libvpx"),
}

#: The colour of the first half second of a sample video, and of the rest: the poster must be the latter.
INTRO_COLOUR = (0, 0, 0)
MAIN_COLOUR = (200, 30, 30)
INTRO_SECONDS = 0.5

#: Muxer options: no random stream serials, dates or UIDs, so a sample's bytes are the same every run.
BITEXACT = {"fflags": "+bitexact"}

#: EXIF tag numbers.
ORIENTATION = 0x0112
GPS_IFD = 0x8825


def pick_encoder(job: str) -> str:
    """The first encoder for ``job`` that the installed FFmpeg has."""
    for name in AUDIO_ENCODERS.get(job, ()) + VIDEO_ENCODERS.get(job, ()):
        try:
            av.codec.Codec(name, "w")
        except av.codec.codec.UnknownCodecError:
            continue
        return name
    raise LookupError(f"no encoder for {job} in this PyAV wheel")


def available_encoders() -> list[str]:
    """Every encoder name above that the installed FFmpeg has (for the report)."""
    found = []
    for names in (*AUDIO_ENCODERS.values(), *VIDEO_ENCODERS.values()):
        for name in names:
            with contextlib.suppress(av.codec.codec.UnknownCodecError):
                found.append(av.codec.Codec(name, "w").name)
    return sorted(set(found))


# --- images ------------------------------------------------------------------------------------------


def halves(width: int, height: int) -> Image.Image:
    """Left half red, right half blue, a green stripe along the top: any rotation or mirror shows."""
    image = Image.new("RGB", (width, height), (220, 20, 20))
    draw = ImageDraw.Draw(image)
    draw.rectangle((width // 2, 0, width, height), fill=(20, 20, 220))
    draw.rectangle((0, 0, width, max(1, height // 8)), fill=(20, 200, 20))
    return image


def make_jpeg(
    path: Path,
    width: int,
    height: int,
    *,
    orientation: int | None = None,
    gps: bool = False,
    mode: str = "RGB",
) -> Path:
    """A JPEG of ``halves``; ``orientation`` sets the EXIF orientation tag, ``gps`` adds a GPS position."""
    exif = Image.Exif()
    if orientation is not None:
        exif[ORIENTATION] = orientation
    if gps:
        exif.get_ifd(GPS_IFD).update({1: "N", 2: (48.0, 51.0, 30.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    halves(width, height).convert(mode).save(path, format="JPEG", quality=90, exif=exif.tobytes())
    return path


def make_png(path: Path, width: int, height: int, *, alpha: bool = False) -> Path:
    """A PNG of ``halves``; with ``alpha`` the right half is fully transparent."""
    image = halves(width, height)
    if alpha:
        mask = Image.new("L", (width, height), 255)
        ImageDraw.Draw(mask).rectangle((width // 2, 0, width, height), fill=0)
        image.putalpha(mask)
    image.save(path, format="PNG")
    return path


def make_gif(path: Path, width: int, height: int) -> Path:
    halves(width, height).convert("P").save(path, format="GIF")
    return path


def make_webp(path: Path, width: int, height: int) -> Path:
    halves(width, height).save(path, format="WEBP", quality=80)
    return path


def make_avif(path: Path, width: int, height: int) -> Path:
    halves(width, height).save(path, format="AVIF", quality=50, speed=10)
    return path


def make_noise_png(path: Path, width: int, height: int, *, seed: int = 14) -> Path:
    """Random pixels: the worst case for JPEG, so the thumbnail must shrink to fit ``MAX_THUMBNAIL``."""
    pixels = random.Random(seed).randbytes(width * height * 3)
    Image.frombytes("RGB", (width, height), pixels).save(path, format="PNG", compress_level=1)
    return path


def make_png_bomb(path: Path, width: int, height: int) -> Path:
    """A valid PNG header claiming ``width`` x ``height`` pixels and a tiny IDAT: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes(1024)))
        + chunk(b"IEND", b"")
    )
    return path


# --- audio -------------------------------------------------------------------------------------------


def _tone(samples: int, rate: int, frequency: float = 440.0) -> bytes:
    wave = array("h", (int(8000 * math.sin(2 * math.pi * frequency * i / rate)) for i in range(samples)))
    return wave.tobytes()


def write_audio(path: Path, seconds: float, *, container: str, codec: str, rate: int) -> Path:
    """``seconds`` of a mono 440 Hz tone encoded with ``codec`` into a ``container`` file."""
    total = round(seconds * rate)
    with av.open(str(path), mode="w", format=container, container_options=BITEXACT) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        frame = av.AudioFrame(format="s16", layout="mono", samples=total)
        frame.planes[0].update(_tone(total, rate))
        frame.sample_rate = rate
        frame.pts = 0
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def make_ogg_opus(path: Path, seconds: float) -> Path:
    return write_audio(path, seconds, container="ogg", codec=pick_encoder("opus"), rate=48_000)


def make_m4a(path: Path, seconds: float) -> Path:
    return write_audio(path, seconds, container="ipod", codec=pick_encoder("aac"), rate=44_100)


def make_mp3(path: Path, seconds: float) -> Path:
    return write_audio(path, seconds, container="mp3", codec=pick_encoder("mp3"), rate=44_100)


def make_flac(path: Path, seconds: float) -> Path:
    return write_audio(path, seconds, container="flac", codec=pick_encoder("flac"), rate=44_100)


def make_wav(path: Path, seconds: float) -> Path:
    return write_audio(path, seconds, container="wav", codec="pcm_s16le", rate=16_000)


def make_amr(path: Path, seconds: float) -> Path:
    """AMR-NB at 8 kHz in its own ``#!AMR`` file: what older Android phones record."""
    return write_audio(path, seconds, container="amr", codec=pick_encoder("amr"), rate=8_000)


def make_3gp_voice(path: Path, seconds: float) -> Path:
    """AMR-NB in a 3GP (MP4-family) file with no picture: a voice note that sniffs as video."""
    return write_audio(path, seconds, container="3gp", codec=pick_encoder("amr"), rate=8_000)


def make_webm_audio(path: Path, seconds: float) -> Path:
    return write_audio(path, seconds, container="webm", codec=pick_encoder("opus"), rate=48_000)


# --- video -------------------------------------------------------------------------------------------


def write_video(path: Path, seconds: float, width: int, height: int, *, container: str, codec: str) -> Path:
    """``seconds`` at 25 fps: ``INTRO_COLOUR`` for ``INTRO_SECONDS``, then ``MAIN_COLOUR``."""
    fps = 25
    intro = Image.new("RGB", (width, height), INTRO_COLOUR)
    main = Image.new("RGB", (width, height), MAIN_COLOUR)
    with av.open(str(path), mode="w", format=container, container_options=BITEXACT) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast"}
        for index in range(round(seconds * fps)):
            frame = av.VideoFrame.from_image(intro if index / fps < INTRO_SECONDS else main)
            frame.pts = index
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def make_mp4(path: Path, seconds: float, width: int, height: int) -> Path:
    return write_video(path, seconds, width, height, container="mp4", codec=pick_encoder("mp4"))


def make_webm(path: Path, seconds: float, width: int, height: int) -> Path:
    return write_video(path, seconds, width, height, container="webm", codec=pick_encoder("webm"))


def rotate_mp4(path: Path) -> Path:
    """Give the MP4's video track the display matrix of a phone held upright (90 degrees clockwise).

    Phones store portrait video as landscape frames plus this matrix in the track header (``tkhd``).
    """
    data = bytearray(path.read_bytes())
    at = data.index(b"tkhd") + 4  # the box body: version and flags first
    version = data[at]
    matrix = at + 4 + (32 if version == 1 else 20) + 8 + 8  # times, track id, duration; reserved; layer...
    one, minus_one = 0x00010000, 0xFFFF0000
    data[matrix : matrix + 36] = struct.pack(">9I", 0, one, 0, minus_one, 0, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))
    return path
