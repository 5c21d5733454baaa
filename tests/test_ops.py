import numpy as np
import pytest

from videor4.rumination.protocol import ToolCall, parse_turn
from videor4.rumination.tools import RuminationEnv, VisionConfig
from videor4.rumination.video import (
    FRAME_CACHE,
    FrameCache,
    VideoError,
    load_frames,
    smart_resize,
    uniform_indices,
)

VISION = VisionConfig(
    frame_max_pixels=4 * 28 * 28,
    clip_max_pixels=16 * 28 * 28,
    crop_min_pixels=16 * 28 * 28,
    crop_max_pixels=32 * 28 * 28,
    crop_margin=0.0,
    max_frames_per_clip=3,
)


@pytest.fixture()
def env(sample_video):
    return RuminationEnv(load_frames(sample_video, num_frames=6), VISION)


def test_smart_resize_rules():
    h, w = smart_resize(1080, 1920, max_pixels=512 * 28 * 28)
    assert h % 28 == 0 and w % 28 == 0 and h * w <= 512 * 28 * 28
    assert abs(w / h - 1920 / 1080) < 0.1
    h, w = smart_resize(20, 30, min_pixels=4 * 28 * 28)
    assert h * w >= 4 * 28 * 28
    with pytest.raises(ValueError):
        smart_resize(1, 500)


def test_uniform_indices():
    assert uniform_indices(16, 4) == [0, 5, 10, 15]
    assert uniform_indices(3, 8) == [0, 1, 2]
    assert uniform_indices(0, 4) == []


def test_shown_frames_are_low_resolution(env):
    imgs = env.initial_images()
    assert len(imgs) == 6
    assert all(im.width * im.height <= VISION.frame_max_pixels for im in imgs)
    assert all(im.width % 28 == 0 and im.height % 28 == 0 for im in imgs)


def test_clipping_returns_higher_resolution_frames(env):
    obs = env.execute(ToolCall("clipping", {"target_frames": [2, 5, 2]}))
    assert obs.ok, obs.text
    assert len(obs.images) == 2  # repeated frame dropped
    assert (
        obs.images[0].width * obs.images[0].height
        > env.initial_images()[0].width * env.initial_images()[0].height
    )
    assert "images 7 to 8" in obs.text
    assert [s.frame_pos for s in env.seen[6:]] == [1, 4]


def test_cropping_cuts_from_full_resolution_source(env):
    frame = env.video.frames[0]
    obs = env.execute(ToolCall("cropping", {"target_image": 1, "bbox_2d": [0.25, 0.25, 0.75, 0.75]}))
    assert obs.ok, obs.text
    img = obs.images[0]
    assert img.width * img.height >= VISION.crop_min_pixels
    # the crop is the middle of the full-resolution frame, not of the 4*28*28 thumbnail
    h, w = frame.shape[:2]
    expected = frame[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4]
    got = np.asarray(img.resize((expected.shape[1], expected.shape[0])))
    assert np.abs(got.astype(int) - expected.astype(int)).mean() < 12
    assert "image 7" in obs.text


def test_crop_of_crop_composes_regions(env):
    env.execute(ToolCall("cropping", {"target_image": 2, "bbox_2d": [0.5, 0.0, 1.0, 0.5]}))
    obs = env.execute(ToolCall("cropping", {"target_image": 7, "bbox_2d": [0.0, 0.0, 0.5, 1.0]}))
    assert obs.ok, obs.text
    frame_pos, region = obs.regions[0]
    assert frame_pos == 1
    assert region == pytest.approx((0.5, 0.0, 0.75, 0.5))


def test_pixel_boxes_are_read_as_pixels(env):
    w, h = env.seen[0].image.size
    obs = env.execute(ToolCall("cropping", {"target_image": 1, "bbox_2d": [0, 0, w / 2, h / 2]}))
    assert obs.ok
    assert obs.regions[0][1] == pytest.approx((0, 0, 0.5, 0.5))


def test_a_box_overshooting_one_is_normalized_and_a_clearly_larger_one_is_pixels(env):
    w, h = env.seen[0].image.size
    # a model's common overshoot: one corner a hair past the edge; clamped, not read as pixels
    obs = env.execute(ToolCall("cropping", {"target_image": 1, "bbox_2d": [0.2, 0.3, 1.02, 0.6]}))
    assert obs.ok, obs.text
    assert obs.regions[0][1] == pytest.approx((0.2, 0.3, 1.0, 0.6))
    # pixels: a coordinate clearly above 1 (here small corner values beside it)
    obs = env.execute(ToolCall("cropping", {"target_image": 1, "bbox_2d": [1, 1, w / 2, h / 2]}))
    assert obs.ok, obs.text
    assert obs.regions[0][1] == pytest.approx((1 / w, 1 / h, 0.5, 0.5))


def test_margin_widens_and_clamps(sample_video):
    env = RuminationEnv(load_frames(sample_video, num_frames=2), VisionConfig(crop_margin=0.1))
    obs = env.execute(ToolCall("cropping", {"target_image": 1, "bbox_2d": [0.05, 0.3, 0.4, 0.5]}))
    assert obs.regions[0][1] == pytest.approx((0.0, 0.2, 0.5, 0.6))


@pytest.mark.parametrize(
    "call,needle",
    [
        (ToolCall("clipping", {"target_frames": [0]}), "frame 0 out of range"),
        (ToolCall("clipping", {"target_frames": [7]}), "frame 7 out of range"),
        (ToolCall("clipping", {"target_frames": [1, 2, 3, 4]}), "too many frames"),
        (ToolCall("cropping", {"target_image": 9, "bbox_2d": [0, 0, 0.5, 0.5]}), "image 9 out of range"),
        (ToolCall("cropping", {"target_image": 1, "bbox_2d": [0.5, 0.5, 0.2, 0.9]}), "zero or negative area"),
        (ToolCall("cropping", {"target_image": 1, "bbox_2d": [0.3, 0.3, 0.3, 0.6]}), "zero or negative area"),
        (ToolCall("cropping", {"target_image": 1, "bbox_2d": [0.5, 0.5, 0.52, 0.52]}), "too small"),
        (ToolCall("cropping", {"target_image": 1, "bbox_2d": [-0.5, -0.5, -0.1, -0.1]}), "outside the image"),
        (ToolCall("zoom", {}), "unknown tool"),
        (ToolCall("cropping", {"target_image": 1.5, "bbox_2d": [0, 0, 1, 1]}), "must be an integer"),
    ],
)
def test_bad_calls_become_execution_errors(env, call, needle):
    n_seen = len(env.seen)
    obs = env.execute(call)
    assert not obs.ok and needle in obs.error
    assert obs.text.startswith("Execution error: ")
    assert len(env.seen) == n_seen  # a failed call adds no image


def test_parse_errors_flow_into_observations(env):
    obs = env.step(parse_turn("<tool_call>{oops}</tool_call>"))
    assert obs.text.startswith("Execution error: tool call is not valid JSON")


def test_image_budget(sample_video):
    env = RuminationEnv(load_frames(sample_video, num_frames=4), VISION, max_images=5)
    assert env.execute(ToolCall("clipping", {"target_frames": [1]})).ok
    obs = env.execute(ToolCall("clipping", {"target_frames": [2]}))
    assert "image budget exhausted" in obs.error


def test_frame_cache_decodes_once(sample_video):
    cache = FrameCache()
    for _ in range(8):  # eight rollouts over one video
        load_frames(sample_video, num_frames=6, cache=cache)
    assert cache.misses == 6 and cache.hits == 42


def test_fps_sampling(sample_video):
    v = load_frames(sample_video, num_frames=None, fps=2.0, cache=None)
    assert v.indices == [0, 4, 8, 12]


@pytest.mark.parametrize(
    "content,reason", [(None, "missing"), (b"", "empty"), (b"\x00not a video" * 50, "corrupt")]
)
def test_bad_videos_raise_video_error(tmp_path, content, reason):
    path = tmp_path / "bad.mp4"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(VideoError) as info:
        load_frames(path, num_frames=4, cache=FRAME_CACHE)
    assert info.value.reason == reason
    assert str(path) in str(info.value)


def test_truncated_video_is_corrupt(tmp_path, sample_video):
    path = tmp_path / "truncated.mp4"
    path.write_bytes(sample_video.read_bytes()[:2000])
    with pytest.raises(VideoError) as info:
        load_frames(path, num_frames=4, cache=None)
    assert info.value.reason == "corrupt"


def test_page_folder_as_video(tmp_path):
    from PIL import Image

    for i in range(3):
        Image.new("RGB", (200, 280), (i * 80, 10, 10)).save(tmp_path / f"page_{i}.png")
    v = load_frames(tmp_path, num_frames=8, cache=None)
    assert v.indices == [0, 1, 2] and v.frames[2][0, 0, 0] == 160
