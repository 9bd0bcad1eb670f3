"""meshchat.media: what the manifest says about a photo, a voice note, a video, a document.

Samples are encoded at test time (tests/media_samples.py). Durations are checked within
``DURATION_TOLERANCE_MS``: encoders pad to whole frames (AAC adds 1,024 priming samples, 23 ms at
44.1 kHz; an MP3 frame is 26 ms); Opus, FLAC and WAV come out exact.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media_samples import (
    INTRO_COLOUR,
    MAIN_COLOUR,
    make_3gp_voice,
    make_amr,
    make_avif,
    make_flac,
    make_gif,
    make_jpeg,
    make_m4a,
    make_mp3,
    make_mp4,
    make_noise_png,
    make_ogg_opus,
    make_png,
    make_png_bomb,
    make_wav,
    make_webm,
    make_webm_audio,
    make_webp,
    rotate_mp4,
    write_audio,
)
from PIL import Image

from meshchat import media
from meshchat.media import (
    MAX_IMAGE_PIXELS,
    MAX_THUMBNAIL,
    THUMBNAIL_SIDE,
    MediaInfo,
    describe,
    guess_mime,
    sample_photo,
    sample_voice_note,
)

DURATION_TOLERANCE_MS = 60
RED, BLUE, GREEN = (220, 20, 20), (20, 20, 220), (20, 200, 20)


def close(colour: tuple[int, ...], expected: tuple[int, int, int], slack: int = 40) -> bool:
    return all(abs(a - b) <= slack for a, b in zip(colour[:3], expected, strict=True))


def thumbnail_of(info: MediaInfo) -> Image.Image:
    """The thumbnail, checked to be a baseline RGB JPEG within the limits, with no metadata."""
    assert info.thumbnail is not None, info.problems
    assert len(info.thumbnail) <= MAX_THUMBNAIL
    image = Image.open(io.BytesIO(info.thumbnail))
    assert image.format == "JPEG"
    assert image.mode == "RGB"
    assert max(image.size) <= THUMBNAIL_SIDE
    assert not image.getexif()  # nothing of the original's EXIF (GPS, camera) travels
    return image


def assert_aspect(image: Image.Image, width: int, height: int) -> None:
    """The thumbnail has the original's shape, to within a pixel of rounding."""
    assert abs(image.width * height - image.height * width) <= max(width, height), (image.size, width, height)


# --- guess_mime --------------------------------------------------------------------------------------

JPEG_HEAD = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
MIME_TABLE = [
    ("a.bin", JPEG_HEAD, "image/jpeg"),
    ("a.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
    ("a", b"GIF89a\x01\x00", "image/gif"),
    ("a", b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp"),
    ("a", b"RIFF\x10\x00\x00\x00WAVEfmt ", "audio/wav"),
    ("a", b"%PDF-1.7\n", "application/pdf"),
    ("a.txt", b"OggS\x00\x02" + bytes(22) + b"\x01\x13OpusHead", "audio/ogg"),
    ("a", b"OggS\x00\x02" + bytes(22) + b"\x01\x2a\x80theora", "video/ogg"),
    ("a", b"ID3\x04\x00\x00", "audio/mpeg"),
    ("a", b"\xff\xfb\x90\x64\x00", "audio/mpeg"),  # an MPEG-1 layer III frame header, no ID3
    ("a", b"\xff\xf1\x50\x80\x02", "audio/aac"),  # ADTS
    ("a", b"fLaC\x00\x00\x00\x22", "audio/flac"),
    ("a", b"#!AMR\n\x04", "audio/amr"),
    ("a", b"\x00\x00\x00\x1cftypM4A \x00\x00\x02\x00", "audio/mp4"),
    ("a", b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00", "video/mp4"),
    ("a", b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00", "video/quicktime"),
    ("a", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00", "image/heic"),
    ("a", b"\x00\x00\x00\x20ftypavif\x00\x00\x00\x00", "image/avif"),
    ("a", b"\x1a\x45\xdf\xa3\x9fB\x86\x81\x01B\x82\x84webm", "video/webm"),
    ("a", b"\x1a\x45\xdf\xa3\xa3B\x86\x81\x01B\x82\x88matroska", "video/x-matroska"),
    ("a", b"RIFF\x10\x00\x00\x00AVI LIST", "video/x-msvideo"),
    ("a.flac", b"ID3\x04\x00\x00", "audio/flac"),  # a FLAC file may start with an ID3 tag
    ("a.zip", b"PK\x03\x04\x14\x00", "application/zip"),
    (
        "report.docx",
        b"PK\x03\x04\x14\x00",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ),
    ("a.jpg", b"PK\x03\x04\x14\x00", "application/zip"),  # a ZIP named .jpg is a ZIP
    ("notes.txt", b"hello", "text/plain"),
    ("voice.opus", b"", "application/octet-stream"),  # an empty file is no voice note, whatever its name
    ("photo.jpg", b"hello, not a photo", "application/octet-stream"),  # the name claims what the bytes deny
    ("song.mp3", b"hello", "application/octet-stream"),
    ("PHOTO.PNG", b"\x89PNG\r\n\x1a\n", "image/png"),
    ("noextension", b"\x00\x01\x02", "application/octet-stream"),
    ("a.weird-extension", b"\x00\x01\x02", "application/octet-stream"),
]


@pytest.mark.parametrize(("name", "head", "expected"), MIME_TABLE)
def test_guess_mime(name: str, head: bytes, expected: str) -> None:
    assert guess_mime(Path(name), head) == expected


# --- images ------------------------------------------------------------------------------------------

IMAGE_MAKERS: list[tuple[str, Callable[[Path, int, int], Path], str]] = [
    ("photo.jpg", make_jpeg, "image/jpeg"),
    ("picture.png", make_png, "image/png"),
    ("animation.gif", make_gif, "image/gif"),
    ("sticker.webp", make_webp, "image/webp"),
    ("modern.avif", make_avif, "image/avif"),
]


@pytest.mark.parametrize(("name", "make", "mime"), IMAGE_MAKERS)
def test_image_gets_a_jpeg_thumbnail_of_its_shape(
    tmp_path: Path, name: str, make: Callable[[Path, int, int], Path], mime: str
) -> None:
    info = describe(make(tmp_path / name, 1200, 500))
    assert (info.mime, info.width, info.height, info.duration_ms, info.problems) == (
        mime,
        1200,
        500,
        None,
        (),
    )
    image = thumbnail_of(info)
    assert image.width == THUMBNAIL_SIDE
    assert_aspect(image, 1200, 500)
    assert close(image.getpixel((10, image.height - 5)), RED)  # left half
    assert close(image.getpixel((image.width - 10, image.height - 5)), BLUE)


def test_small_image_is_not_enlarged(tmp_path: Path) -> None:
    image = thumbnail_of(describe(make_png(tmp_path / "icon.png", 90, 40)))
    assert image.size == (90, 40)


@pytest.mark.parametrize(
    ("orientation", "top", "bottom", "stripe"),
    [
        (6, RED, BLUE, "right"),  # turn 90 degrees clockwise to display
        (8, BLUE, RED, "left"),  # turn 90 degrees counterclockwise
        (5, RED, BLUE, "left"),  # mirror across the diagonal
        (7, BLUE, RED, "right"),  # mirror across the other diagonal
    ],
)
def test_exif_orientation_is_applied(
    tmp_path: Path, orientation: int, top: tuple[int, int, int], bottom: tuple[int, int, int], stripe: str
) -> None:
    # Stored: left half red, right half blue, a green stripe along the top edge.
    info = describe(make_jpeg(tmp_path / "portrait.jpg", 800, 400, orientation=orientation))
    assert (info.width, info.height) == (400, 800)  # as displayed
    image = thumbnail_of(info)
    assert_aspect(image, 400, 800)
    assert image.height == THUMBNAIL_SIDE
    assert close(image.getpixel((image.width // 2, image.height // 4)), top)
    assert close(image.getpixel((image.width // 2, 3 * image.height // 4)), bottom)
    edge = 3 if stripe == "left" else image.width - 4
    assert close(image.getpixel((edge, image.height // 4)), GREEN)
    assert not close(image.getpixel((image.width - 1 - edge, image.height // 4)), GREEN)


def test_upside_down_photo_is_turned(tmp_path: Path) -> None:
    info = describe(make_jpeg(tmp_path / "upside.jpg", 400, 200, orientation=3))
    assert (info.width, info.height) == (400, 200)
    image = thumbnail_of(info)
    assert close(image.getpixel((image.width // 4, image.height // 2)), BLUE)  # left and right swapped
    assert close(image.getpixel((image.width // 2, image.height - 3)), GREEN)  # the stripe at the bottom


def test_thumbnail_drops_exif_and_gps(tmp_path: Path) -> None:
    path = make_jpeg(tmp_path / "holiday.jpg", 640, 480, gps=True)
    with Image.open(path) as original:
        assert original.getexif().get_ifd(0x8825)  # the original has a position
    thumbnail_of(describe(path))  # checks the thumbnail has no EXIF at all


def test_transparency_is_shown_on_white(tmp_path: Path) -> None:
    image = thumbnail_of(describe(make_png(tmp_path / "logo.png", 400, 400, alpha=True)))
    assert close(image.getpixel((image.width - 10, image.height - 10)), (255, 255, 255), slack=8)
    assert close(image.getpixel((10, image.height - 10)), RED)


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_grey_and_cmyk_jpegs_give_rgb_thumbnails(tmp_path: Path, mode: str) -> None:
    info = describe(make_jpeg(tmp_path / f"{mode}.jpg", 500, 300, mode=mode))
    assert_aspect(thumbnail_of(info), 500, 300)


def test_noise_lowers_the_quality_until_it_fits(tmp_path: Path) -> None:
    # Random pixels are JPEG's worst case: at 320 x 240 and quality 80 they take ~48 KiB.
    path = make_noise_png(tmp_path / "noise.png", 320, 240)
    best = io.BytesIO()
    with Image.open(path) as original:
        original.save(best, format="JPEG", quality=media.THUMBNAIL_QUALITIES[0], optimize=True)
    assert best.tell() > MAX_THUMBNAIL
    image = thumbnail_of(describe(path))
    assert image.size == (320, 240)  # the same size, a lower quality


def test_noise_shrinks_the_side_when_the_lowest_quality_is_too_large(tmp_path: Path) -> None:
    image = thumbnail_of(describe(make_noise_png(tmp_path / "noise.png", 320, 320)))
    assert image.width == image.height < THUMBNAIL_SIDE
    assert image.width in media.THUMBNAIL_SIDES


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (100_000, 100_000),  # over twice Pillow's own limit: Pillow raises while opening
        (10_000, 10_000),  # over Pillow's limit (89 Mpx): Pillow warns while opening
        (9_000, 8_000),  # 72 Mpx: under Pillow's limit, over ours
    ],
)
def test_decompression_bomb_is_not_decoded(tmp_path: Path, width: int, height: int) -> None:
    assert width * height > MAX_IMAGE_PIXELS
    info = describe(make_png_bomb(tmp_path / "bomb.png", width, height))
    assert info.mime == "image/png"
    assert info.thumbnail is None
    assert len(info.problems) == 1 and "pixels" in info.problems[0], info.problems


def test_pixel_limit_is_inclusive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media, "MAX_IMAGE_PIXELS", 40 * 25)
    assert describe(make_png(tmp_path / "at.png", 40, 25)).thumbnail is not None
    over = describe(make_png(tmp_path / "over.png", 41, 25))
    assert over.thumbnail is None
    assert over.problems == ("no thumbnail: 41x25 is 1,025 pixels; the limit is 1,000",)


def test_webp_has_a_lower_pixel_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow's WebP decoder holds four copies of the picture: a quarter of the pixels for the same memory.
    assert media.MAX_WEBP_PIXELS == MAX_IMAGE_PIXELS // 4
    monkeypatch.setitem(media._PIXEL_LIMITS, "WEBP", 1000)
    assert describe(make_png(tmp_path / "ok.png", 41, 25)).thumbnail is not None
    info = describe(make_webp(tmp_path / "big.webp", 41, 25))
    assert info.problems == ("no thumbnail: 41x25 is 1,025 pixels; the limit is 1,000",)


@pytest.mark.parametrize(
    ("mode", "name"),
    [("1", "a.png"), ("LA", "a.png"), ("P", "a.png"), ("I;16", "a.png"), ("F", "a.tif"), ("CMYK", "a.tif")],
)
def test_unusual_modes_give_rgb_thumbnails(tmp_path: Path, mode: str, name: str) -> None:
    path = tmp_path / name
    Image.linear_gradient("L").resize((300, 200)).convert(mode).save(path)
    assert_aspect(thumbnail_of(describe(path)), 300, 200)


def test_palette_transparency_is_shown_on_white(tmp_path: Path) -> None:
    path = tmp_path / "sticker.gif"
    image = Image.new("P", (100, 100), 1)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(0, (0, 0, 50, 100))  # left half: colour 0, red
    image.save(path, transparency=1)  # right half transparent
    thumbnail = thumbnail_of(describe(path))
    assert close(thumbnail.getpixel((10, 50)), (255, 0, 0))
    assert close(thumbnail.getpixel((90, 50)), (255, 255, 255), slack=8)


def test_truncated_jpeg_gives_a_problem(tmp_path: Path) -> None:
    whole = make_jpeg(tmp_path / "whole.jpg", 800, 600).read_bytes()
    path = tmp_path / "half.jpg"
    path.write_bytes(whole[: len(whole) // 2])
    info = describe(path)
    assert (info.mime, info.thumbnail) == ("image/jpeg", None)
    assert info.problems and "does not decode" in info.problems[0]


def test_corrupt_png_gives_a_problem(tmp_path: Path) -> None:
    data = bytearray(make_png(tmp_path / "ok.png", 300, 200).read_bytes())
    at = data.index(b"IDAT") + 20
    data[at : at + 16] = bytes(16)  # the chunk's CRC no longer matches
    path = tmp_path / "bad.png"
    path.write_bytes(bytes(data))
    info = describe(path)
    assert (info.mime, info.thumbnail) == ("image/png", None)
    assert info.problems


def test_text_named_jpg_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_text("just some text\n" * 100)
    info = describe(path)
    assert (info.mime, info.thumbnail, info.width) == ("application/octet-stream", None, None)
    assert info.problems == ("the name says image/jpeg but the content does not start like one",)


def test_image_type_without_decoder_says_so(tmp_path: Path) -> None:
    path = tmp_path / "phone.heic"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(100))
    info = describe(path)
    assert (info.mime, info.thumbnail) == ("image/heic", None)
    assert info.problems == ("no thumbnail: no image/heic decoder",)


def test_document_is_just_a_type(tmp_path: Path) -> None:
    path = tmp_path / "paper.pdf"
    path.write_bytes(b"%PDF-1.7\n" + bytes(5000))
    assert describe(path) == MediaInfo(mime="application/pdf")


def test_media_info_cannot_hold_an_oversized_thumbnail_or_negative_numbers() -> None:
    with pytest.raises(ValueError, match="24,577 bytes; the limit is 24,576"):
        MediaInfo(mime="image/jpeg", thumbnail=bytes(MAX_THUMBNAIL + 1))
    with pytest.raises(ValueError, match="duration_ms is -1"):
        MediaInfo(mime="audio/ogg", duration_ms=-1)


def test_unreadable_path_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        describe(tmp_path / "missing.jpg")


# --- audio -------------------------------------------------------------------------------------------

AUDIO_MAKERS: list[tuple[str, Callable[[Path, float], Path], str]] = [
    ("voice.ogg", make_ogg_opus, "audio/ogg"),
    ("voice.m4a", make_m4a, "audio/mp4"),
    ("voice.mp3", make_mp3, "audio/mpeg"),
    ("song.flac", make_flac, "audio/flac"),
    ("memo.wav", make_wav, "audio/wav"),
    ("voice.webm", make_webm_audio, "audio/webm"),  # no mutagen reader: PyAV's duration
    ("memo.amr", make_amr, "audio/amr"),  # no mutagen reader: PyAV's duration
    ("memo.3gp", make_3gp_voice, "audio/3gpp"),  # sniffed as video; PyAV finds no picture
]


@pytest.mark.parametrize(("name", "make", "mime"), AUDIO_MAKERS)
@pytest.mark.parametrize("seconds", [0.5, 3.25])
def test_audio_duration(
    tmp_path: Path, name: str, make: Callable[[Path, float], Path], mime: str, seconds: float
) -> None:
    info = describe(make(tmp_path / name, seconds))
    assert (info.mime, info.thumbnail, info.width, info.problems) == (mime, None, None, ())
    assert info.duration_ms is not None
    assert abs(info.duration_ms - seconds * 1000) <= DURATION_TOLERANCE_MS, info.duration_ms


def test_audio_only_mp4_is_audio(tmp_path: Path) -> None:
    # An MP4 with the generic "isom" brand holding sound only: sniffed as video, PyAV finds no picture.
    path = write_audio(tmp_path / "sound.mp4", 1.0, container="mp4", codec="aac", rate=44_100)
    info = describe(path)
    assert (info.mime, info.thumbnail) == ("audio/mp4", None)
    assert info.duration_ms is not None and abs(info.duration_ms - 1000) <= DURATION_TOLERANCE_MS


def test_truncated_voice_note_gives_a_problem_or_a_shorter_duration(tmp_path: Path) -> None:
    whole = make_mp3(tmp_path / "whole.mp3", 2.0).read_bytes()
    path = tmp_path / "cut.mp3"
    path.write_bytes(whole[:200])
    info = describe(path)
    assert info.mime == "audio/mpeg"
    assert info.problems or (
        info.duration_ms is not None and info.duration_ms <= 2000 + DURATION_TOLERANCE_MS
    )


def test_empty_voice_note_gives_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "voice.opus"
    path.write_bytes(b"")
    info = describe(path)
    assert (info.mime, info.duration_ms) == ("application/octet-stream", None)
    assert info.problems == ("the name says audio/ogg but the content does not start like one",)


def test_voice_note_without_pages_gives_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "voice.ogg"
    path.write_bytes(b"OggS" + bytes(100))
    info = describe(path)
    assert (info.mime, info.duration_ms) == ("audio/ogg", None)
    assert len(info.problems) == 1 and info.problems[0].startswith("no duration"), info.problems


# --- video -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "make", "mime"), [("clip.mp4", make_mp4, "video/mp4"), ("clip.webm", make_webm, "video/webm")]
)
def test_video_duration_size_and_poster(
    tmp_path: Path, name: str, make: Callable[[Path, float, int, int], Path], mime: str
) -> None:
    info = describe(make(tmp_path / name, 2.0, 320, 180))
    assert (info.mime, info.width, info.height, info.problems) == (mime, 320, 180, ())
    assert info.duration_ms is not None and abs(info.duration_ms - 2000) <= DURATION_TOLERANCE_MS
    poster = thumbnail_of(info)
    assert_aspect(poster, 320, 180)
    # The first half second is black: the poster is the frame at 1 s, not the first one.
    centre = poster.getpixel((poster.width // 2, poster.height // 2))
    assert close(centre, MAIN_COLOUR) and not close(centre, INTRO_COLOUR), centre


def test_short_video_poster_is_from_its_middle(tmp_path: Path) -> None:
    info = describe(make_mp4(tmp_path / "short.mp4", 1.2, 160, 160))
    poster = thumbnail_of(info)
    assert close(poster.getpixel((80, 80)), MAIN_COLOUR)  # 0.6 s: past the black intro


def test_large_video_poster_is_scaled_down(tmp_path: Path) -> None:
    info = describe(make_mp4(tmp_path / "wide.mp4", 1.0, 1280, 720))
    assert (info.width, info.height) == (1280, 720)
    poster = thumbnail_of(info)
    assert poster.width == THUMBNAIL_SIDE
    assert_aspect(poster, 1280, 720)


def test_phone_portrait_video_is_upright(tmp_path: Path) -> None:
    info = describe(rotate_mp4(make_mp4(tmp_path / "portrait.mp4", 1.0, 320, 160)))
    assert (info.width, info.height) == (160, 320)
    assert_aspect(thumbnail_of(info), 160, 320)


def test_truncated_video_gives_problems(tmp_path: Path) -> None:
    whole = make_mp4(tmp_path / "whole.mp4", 1.0, 160, 120).read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(whole[: len(whole) // 2])  # the moov box (the index) is at the end: gone
    info = describe(path)
    assert (info.mime, info.thumbnail, info.duration_ms) == ("video/mp4", None, None)
    assert len(info.problems) == 2, info.problems


MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"


def test_mp4_without_tracks_says_so(tmp_path: Path) -> None:
    # Found by test_damaged_media_never_raises: a cut moov left PyAV no stream at all and the result
    # had neither a poster, nor a duration, nor a problem saying why.
    path = tmp_path / "cut.mp4"
    mvhd = struct.pack(">I", 108) + b"mvhd" + bytes(100)  # a movie header of zeros: no time scale
    path.write_bytes(MP4_HEAD + struct.pack(">I", 8 + len(mvhd)) + b"moov" + mvhd)
    info = describe(path)
    assert (info.mime, info.thumbnail, info.duration_ms) == ("video/mp4", None, None)
    assert info.problems[0] == "no poster frame: no video stream found"
    assert info.problems[1].startswith("no duration")


def test_empty_movie_is_not_sound(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    path.write_bytes(MP4_HEAD + struct.pack(">I", 8) + b"moov")  # PyAV: no stream, a duration of 0
    info = describe(path)
    assert info.mime == "video/mp4"
    assert info.problems == ("no poster frame: no video stream found",)


def test_playlist_named_like_a_video_is_not_followed(tmp_path: Path) -> None:
    # FFmpeg guessing the format would read an HLS or concat playlist and open what it names.
    target = tmp_path / "clip.mp4"
    make_mp4(target, 1.0, 64, 48)
    path = tmp_path / "holiday.mpg"
    path.write_text("ffconcat version 1.0\nfile clip.mp4\n")  # a name the concat demuxer deems safe
    info = describe(path)
    assert (info.mime, info.thumbnail, info.duration_ms) == ("video/mpeg", None, None)
    assert len(info.problems) == 2, info.problems
    assert info.problems[0].startswith("no poster frame: the file does not decode: ")
    assert info.problems[1].startswith("no duration: the file does not decode: ")


def test_problems_do_not_name_the_local_folder(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(50))
    info = describe(path)
    assert info.problems
    assert not any(str(tmp_path) in problem for problem in info.problems), info.problems


@pytest.fixture
def without_av(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import av`` fails, as on an install without the ``media`` extra."""
    monkeypatch.setitem(sys.modules, "av", None)


def test_without_pyav_mp4_has_duration_but_no_poster(tmp_path: Path) -> None:
    path = make_mp4(tmp_path / "clip.mp4", 2.0, 320, 180)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "av", None)
        info = describe(path)
    assert (info.mime, info.thumbnail, info.width) == ("video/mp4", None, None)
    assert info.duration_ms is not None and abs(info.duration_ms - 2000) <= DURATION_TOLERANCE_MS
    assert info.problems == ("no poster frame: PyAV is not installed (pip install 'meshchat[media]')",)


def test_without_pyav_webm_says_what_is_missing(tmp_path: Path) -> None:
    path = make_webm(tmp_path / "clip.webm", 1.0, 160, 120)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "av", None)
        info = describe(path)
    assert (info.mime, info.thumbnail, info.duration_ms) == ("video/webm", None, None)
    assert len(info.problems) == 2 and all("PyAV is not installed" in p for p in info.problems)


def test_importing_media_needs_no_pyav(tmp_path: Path) -> None:
    path = make_mp4(tmp_path / "clip.mp4", 1.0, 64, 48)
    code = (
        "import sys; sys.modules['av'] = None\n"  # import av raises ImportError from here on
        "from pathlib import Path\nfrom meshchat.media import describe\n"
        f"info = describe(Path({str(path)!r}))\nprint(info.duration_ms, info.thumbnail)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["1000", "None"]


@pytest.mark.usefixtures("without_av")
def test_without_pyav_sample_voice_note_says_why(tmp_path: Path) -> None:
    with pytest.raises(ImportError, match=r"meshchat\[media\]"):
        sample_voice_note(tmp_path / "voice.ogg")


# --- demo helpers ------------------------------------------------------------------------------------


def test_sample_photo_and_voice_note(tmp_path: Path) -> None:
    photo = describe(sample_photo(tmp_path / "photo.jpg"))
    assert (photo.mime, photo.width, photo.height, photo.problems) == ("image/jpeg", 1600, 1200, ())
    assert_aspect(thumbnail_of(photo), 1600, 1200)
    voice = describe(sample_voice_note(tmp_path / "voice.ogg", seconds=2.5))
    assert (voice.mime, voice.duration_ms, voice.problems) == ("audio/ogg", 2500, ())


# --- hostile bytes -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """One small sample of each kind, to damage."""
    folder = tmp_path_factory.mktemp("pristine")
    made = [
        make_jpeg(folder / "a.jpg", 120, 80, orientation=6),
        make_png(folder / "a.png", 60, 40, alpha=True),
        make_gif(folder / "a.gif", 60, 40),
        make_webp(folder / "a.webp", 60, 40),
        make_ogg_opus(folder / "a.ogg", 0.3),
        make_mp3(folder / "a.mp3", 0.3),
        make_m4a(folder / "a.m4a", 0.3),
        make_flac(folder / "a.flac", 0.3),
        make_mp4(folder / "a.mp4", 0.5, 64, 48),
        make_webm(folder / "a.webm", 0.5, 64, 48),
        make_avif(folder / "a.avif", 60, 40),
        make_wav(folder / "a.wav", 0.3),
    ]
    return {path.name: path.read_bytes() for path in made}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_media_never_raises(tmp_path: Path, pristine: dict[str, bytes], data: st.DataObject) -> None:
    """Either a description or problems, never an exception (h11's fuzzing rule)."""
    name = data.draw(st.sampled_from(sorted(pristine)))
    damaged = bytearray(pristine[name])
    for _ in range(data.draw(st.integers(0, 8))):
        at = data.draw(st.integers(0, len(damaged) - 1))
        damaged[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(damaged)))
    path = tmp_path / name
    path.write_bytes(bytes(damaged[:cut]))
    info = describe(path)
    assert info.thumbnail is None or len(info.thumbnail) <= MAX_THUMBNAIL
    assert info.duration_ms is None or info.duration_ms >= 0
    if not info.problems:  # every field a type promises is there, or a problem says why not
        kind = info.mime.partition("/")[0]
        assert kind != "image" or info.thumbnail is not None
        assert kind not in ("audio", "video") or info.duration_ms is not None
        assert kind != "video" or info.thumbnail is not None
