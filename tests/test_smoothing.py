"""The One Euro filter's math, the per-face smoother's signal groups, its config and flags, and a real clip."""
from __future__ import annotations

import argparse
import math

import numpy as np
import pytest

from conftest import data_path
from facewire.tracker.smoothing import (FaceSmoother, OneEuroFilter, OneEuroParams, SmoothingConfig,
                                        add_smoothing_arguments, face_size, parse_params,
                                        smoothing_alpha, smoothing_config_from_args)

DT = 1 / 30


def run(filt: OneEuroFilter, values, times=None) -> np.ndarray:
    times = np.arange(len(values)) * DT if times is None else times
    return np.array([filt(t, np.asarray(v, np.float64)) for t, v in zip(times, values)])


# --- filter math ------------------------------------------------------------------------------------

def test_a_constant_signal_stays_exactly_put():
    x = np.array([[3.5, -2.0, 100.0], [0.0, 1e-3, 7.0]])
    for rows in (False, True):
        out = run(OneEuroFilter(OneEuroParams(0.5, 3.0), rows=rows), [x] * 50)
        assert np.array_equal(out, np.broadcast_to(x, out.shape))


def test_the_first_sample_passes_unchanged_then_one_step_uses_the_time_based_alpha():
    for dt in (1 / 30, 1 / 7):
        filt = OneEuroFilter(OneEuroParams(1.2, 0.0))
        assert filt(0.0, np.array([0.0]))[0] == 0.0
        assert filt(dt, np.array([1.0]))[0] == pytest.approx(smoothing_alpha(1.2, dt))
    # alpha = 1 / (1 + tau / dt), tau = 1 / (2 pi fc)
    assert smoothing_alpha(1.0, 0.1) == pytest.approx(1 / (1 + 1 / (2 * math.pi) / 0.1))


def test_a_step_converges_monotonically_and_faster_with_a_higher_cutoff():
    steps = [0.0] * 5 + [1.0] * 115
    slow = run(OneEuroFilter(OneEuroParams(0.5, 0.0)), steps)
    fast = run(OneEuroFilter(OneEuroParams(3.0, 0.0)), steps)
    for out in (slow, fast):
        after = out[5:]
        assert np.all(np.diff(after) >= 0) and np.all(after <= 1.0)
    assert fast[-1] > 1 - 1e-6 and slow[-1] > 0.99          # 3.8 s with tau = 0.32 s: converged
    assert fast[10] > slow[10] + 0.3                          # ...and the faster filter gets there sooner
    # with beta the big step raises the cutoff: it converges sooner than the same min_cutoff alone
    adaptive = run(OneEuroFilter(OneEuroParams(0.5, 1.0)), steps)
    assert adaptive[10] > slow[10] + 0.2


def test_a_ramps_lag_shrinks_as_beta_grows_and_matches_tau_without_beta():
    ramp = np.arange(150) * 2.0 * DT          # 2 units per second
    lags = []
    for beta in (0.0, 0.3, 1.0, 3.0, 10.0):
        out = run(OneEuroFilter(OneEuroParams(1.0, beta)), ramp)
        lags.append((ramp[-1] - out[-1]) / 2.0)  # seconds behind, in steady state
    assert all(a > b for a, b in zip(lags, lags[1:])), lags
    a = smoothing_alpha(1.0, DT)
    assert lags[0] == pytest.approx((1 - a) / a * DT, rel=1e-3)   # the discrete low-pass's ramp lag
    assert lags[-1] < lags[0] / 5


def test_irregular_timestamps_follow_the_same_decay_as_regular_ones():
    rng = np.random.default_rng(3)
    regular = np.arange(0, 1.0 + 1e-9, 1 / 60)
    irregular = np.concatenate([[0.0], np.cumsum(rng.uniform(1 / 120, 1 / 15, 200))])
    irregular = irregular[irregular <= 1.0]
    for times in (regular, irregular):
        filt = OneEuroFilter(OneEuroParams(1.0, 0.0))
        filt(0.0, np.array([0.0]))
        for t in times[1:]:
            out = filt(t, np.array([1.0]))
        # value at the last time against the continuous decay 1 - exp(-t / tau)
        tau = 1 / (2 * math.pi)
        assert out[0] == pytest.approx(1 - math.exp(-times[-1] / tau), abs=0.06)
    # a frame that takes three times as long moves the output further than one quick frame, and not
    # further than three quick ones
    one = OneEuroFilter(OneEuroParams(1.0, 0.0))
    one(0.0, np.array([0.0]))
    slow = one(3 * DT, np.array([1.0]))[0]
    three = OneEuroFilter(OneEuroParams(1.0, 0.0))
    three(0.0, np.array([0.0]))
    quick = [three(k * DT, np.array([1.0]))[0] for k in (1, 2, 3)]
    assert quick[0] < quick[1] < slow < quick[2]


def test_same_time_returns_the_previous_output_and_time_going_back_is_refused():
    filt = OneEuroFilter(OneEuroParams(1.0, 0.0))
    filt(0.0, np.array([0.0]))
    first = filt(0.1, np.array([1.0]))
    assert np.array_equal(filt(0.1, np.array([5.0])), first)
    with pytest.raises(ValueError, match="backwards"):
        filt(0.05, np.array([1.0]))
    with pytest.raises(ValueError, match="finite"):
        filt(float("nan"), np.array([1.0]))


def test_reset_and_a_new_shape_start_afresh():
    filt = OneEuroFilter(OneEuroParams(0.5, 0.0))
    run(filt, [np.zeros(3)] * 10)
    filt.reset()
    assert not filt.started
    assert np.array_equal(filt(1.0, np.full(3, 7.0)), np.full(3, 7.0))
    assert np.array_equal(filt(1.1, np.full(4, -2.0)), np.full(4, -2.0))
    filt.replace_value(np.full(4, 3.0))            # e.g. a renormalised quaternion: filtering goes on from it
    assert np.all(filt(1.2, np.full(4, 3.0)) == 3.0)
    with pytest.raises(ValueError, match="shape"):
        filt.replace_value(np.zeros(2))


def test_rows_share_one_cutoff_from_the_vector_speed():
    # x moves fast, y is still: per element, y keeps its low cutoff; per row it follows x's speed
    values = [np.array([[10.0 * k, 0.0 if k < 10 else 0.1]]) for k in range(11)]
    per_element = run(OneEuroFilter(OneEuroParams(0.5, 1.0), rows=False), values)
    per_row = run(OneEuroFilter(OneEuroParams(0.5, 1.0), rows=True), values)
    assert per_row[-1, 0, 1] > 0.09             # moves with x: little lag
    assert per_element[-1, 0, 1] < 0.03         # its own small step: heavily smoothed


# --- per-face smoother and its groups ---------------------------------------------------------------

def face_points(rng, scale=1.0, shift=0.0):
    base = rng.uniform(-50, 50, (478, 3))
    return base * scale + shift


def test_points_smoothing_does_not_depend_on_the_faces_size_or_place():
    rng = np.random.default_rng(0)
    base = face_points(rng)
    path = [base + np.array([3.0 * k, 0.0, 0.0]) + rng.normal(0, 0.5, base.shape) for k in range(30)]
    near, far = FaceSmoother(), FaceSmoother()
    for k, pts in enumerate(path):
        a = near.apply(0, k * DT, {"points": pts})["points"]
        b = far.apply(0, k * DT, {"points": pts * 0.25 + 100.0})["points"]
        np.testing.assert_allclose(b, a * 0.25 + 100.0, rtol=1e-9, atol=1e-9)
    assert face_size(base * 0.25) == pytest.approx(face_size(base) * 0.25)


def test_apply_returns_new_arrays_of_the_input_dtype_and_leaves_inputs_alone():
    rng = np.random.default_rng(1)
    pts = face_points(rng).astype(np.float32)
    keep = pts.copy()
    smoother = FaceSmoother()
    out = smoother.apply(0, 0.0, {"points": pts})["points"]
    assert out is not pts and out.dtype == np.float32 and np.array_equal(out, pts)
    out[:] = 0
    again = smoother.apply(0, DT, {"points": pts + 1})["points"]
    assert np.array_equal(pts, keep)
    assert np.all(again > keep - 1e-3) and np.all(again < keep + 1)   # the state was not the caller's array


def test_pose_quaternion_sign_flips_do_not_move_the_pose_and_translation_is_smoothed():
    smoother = FaceSmoother()
    half = math.radians(20) / 2
    q = np.array([0.0, math.sin(half), 0.0, math.cos(half)])
    poses = [np.concatenate([q * (-1) ** k, [10.0, 0.0, 600.0 + (k % 2)]]) for k in range(20)]
    outs = [smoother.apply(3, k * DT, {"pose": p})["pose"] for k, p in enumerate(poses)]
    for out in outs:
        np.testing.assert_allclose(out[:4], q, atol=1e-12)        # same rotation, w >= 0, unit length
    assert np.ptp([o[6] for o in outs[10:]]) < 0.5                 # the 1 mm flicker is damped


def test_pose_turning_through_w_zero_stays_continuous():
    smoother = FaceSmoother(SmoothingConfig(pose=OneEuroParams(2.0, 0.0)))
    prev = None
    for k in range(60):
        angle = math.radians(150 + k)            # passes 180 degrees: the quaternion's w changes sign
        q = np.array([0.0, 0.0, math.sin(angle / 2), math.cos(angle / 2)])
        q = q if q[3] >= 0 else -q               # the tracker's convention, w >= 0: a jump in q
        out = smoother.apply(0, k * DT, {"pose": np.concatenate([q, [0, 0, 500.0]])})["pose"]
        assert out[3] >= 0 and abs(np.linalg.norm(out[:4]) - 1) < 1e-9
        if prev is not None:
            step = 2 * math.degrees(math.acos(min(1.0, abs(float(out[:4] @ prev)))))
            assert step < 1.5                    # never more than the 1 degree per frame it turns
        prev = out[:4]


def test_angles_wrap_around_instead_of_swinging_through_zero():
    smoother = FaceSmoother(SmoothingConfig(pose=OneEuroParams(1.0, 0.0)))
    outs = [smoother.apply(0, k * DT, {"angles": np.array([a, -5.0, 0.0])})["angles"]
            for k, a in enumerate([178.0, 179.0, -179.0, -178.0, -177.0])]
    for out in outs:
        assert out[0] >= 170.0 or out[0] <= -170.0
        assert -180.0 <= out[0] < 180.0


def test_blendshapes_are_clipped_and_gaze_vectors_stay_unit_length():
    smoother = FaceSmoother()
    rng = np.random.default_rng(2)
    for k in range(10):
        shapes = np.clip(rng.normal(0.5, 0.6, 52), -0.2, 1.2)
        gaze = rng.normal(0, 0.1, (2, 3)) + np.array([0.0, 0.0, -1.0])
        gaze /= np.linalg.norm(gaze, axis=1, keepdims=True)
        out = smoother.apply(0, k * DT, {"blendshapes": shapes, "gaze": gaze})
        assert out["blendshapes"].min() >= 0 and out["blendshapes"].max() <= 1
        np.testing.assert_allclose(np.linalg.norm(out["gaze"], axis=1), 1.0, atol=1e-12)


def test_faces_are_independent_and_reset_or_forget_starts_them_afresh():
    smoother = FaceSmoother()
    smoother.apply(0, 0.0, {"blendshapes": np.zeros(52)})
    smoother.apply(1, 0.0, {"blendshapes": np.ones(52)})
    a = smoother.apply(0, DT, {"blendshapes": np.full(52, 0.5)})["blendshapes"]
    b = smoother.apply(1, DT, {"blendshapes": np.full(52, 0.5)})["blendshapes"]
    assert np.all(a < 0.5) and np.all(b > 0.5)
    smoother.reset(0)
    assert np.array_equal(smoother.apply(0, 2 * DT, {"blendshapes": np.full(52, 0.9)})["blendshapes"],
                          np.full(52, 0.9))
    smoother.apply(2, 0.0, {"gaze": np.array([[0.0, 0.0, -1.0]])})
    smoother.forget_except([1])
    assert smoother.face_ids() == {1}
    smoother.reset(42)                                   # an unknown id is not an error


def test_switched_off_it_passes_copies_through():
    smoother = FaceSmoother(SmoothingConfig(enabled=False))
    x = np.linspace(0, 1, 52)
    for k in range(3):
        out = smoother.apply(0, k * DT, {"blendshapes": x + k})["blendshapes"]
        assert np.array_equal(out, x + k)
    assert smoother.face_ids() == set()


def test_bad_signals_are_refused_with_their_name():
    smoother = FaceSmoother()
    with pytest.raises(ValueError, match="unknown signal 'mouth'"):
        smoother.apply(0, 0.0, {"mouth": np.zeros(3)})
    with pytest.raises(ValueError, match="'points'.*finite"):
        smoother.apply(0, 0.0, {"points": np.full((478, 3), np.nan)})
    with pytest.raises(ValueError, match="'pose' must be"):
        smoother.apply(0, 0.0, {"pose": np.zeros(6)})
    with pytest.raises(ValueError, match="zero quaternion"):
        smoother.apply(0, 0.0, {"pose": np.zeros(7)})
    with pytest.raises(ValueError, match="'points' must be"):
        smoother.apply(0, 0.0, {"points": np.zeros((478, 4))})
    with pytest.raises(ValueError, match="'gaze' must be"):
        smoother.apply(0, 0.0, {"gaze": np.zeros((2, 5))})


# --- config and flags -------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    ((0.0, 1.0), "min_cutoff must be above 0"),
    ((1.0, -1.0), "beta cannot be negative"),
    ((1.0, 1.0, 0.0), "d_cutoff must be above 0"),
    ((float("nan"), 1.0), "min_cutoff must be a finite number"),
    ((1.0, float("inf")), "beta must be a finite number"),
    ((1.0, "2"), "beta must be a finite number"),
])
def test_params_validation_names_the_setting(args, message):
    with pytest.raises(ValueError, match=message):
        OneEuroParams(*args)


def test_config_refuses_other_types_and_unknown_groups():
    with pytest.raises(TypeError, match="SmoothingConfig.pose must be a OneEuroParams"):
        SmoothingConfig(pose=(1.0, 2.0))
    with pytest.raises(ValueError, match="unknown signal group 'mouth'"):
        SmoothingConfig().params("mouth")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facetracker", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_smoothing_arguments(p)
    return p


def test_flags_default_to_the_tuned_config_and_set_each_group():
    assert smoothing_config_from_args(parser().parse_args([])) == SmoothingConfig()
    config = smoothing_config_from_args(parser().parse_args(
        ["--smooth-points", "1,2", "--smooth-pose", "0.5, 3, 2", "--smooth-blendshapes", "4,0",
         "--smooth-gaze", "2,7,1.5"]))
    assert config.points == OneEuroParams(1.0, 2.0, 1.0)
    assert config.pose == OneEuroParams(0.5, 3.0, 2.0)
    assert config.blendshapes == OneEuroParams(4.0, 0.0)
    assert config.gaze == OneEuroParams(2.0, 7.0, 1.5)
    assert config.enabled
    assert not smoothing_config_from_args(parser().parse_args(["--no-smoothing"])).enabled


@pytest.mark.parametrize("argv, message", [
    (["--smooth-points", "1"], "argument --smooth-points: expected MIN_CUTOFF,BETA"),
    (["--smooth-pose", "1,x"], "argument --smooth-pose: expected numbers"),
    (["--smooth-gaze", "1,-2"], "argument --smooth-gaze: beta cannot be negative"),
    (["--smooth-blendshapes", "0,1,1"], "argument --smooth-blendshapes: min_cutoff must be above 0"),
])
def test_bad_flags_exit_with_a_message_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_help_shows_the_defaults_in_flag_spelling():
    text = parser().format_help()
    assert f"(default: {SmoothingConfig().points})" in text
    assert str(OneEuroParams(0.05, 5.0, 4.0)) == "0.05,5,4"
    assert parse_params(str(SmoothingConfig().pose)) == SmoothingConfig().pose
    with pytest.raises(ValueError, match="^--smooth-x: expected"):
        parse_params("1", "--smooth-x")


# --- real data --------------------------------------------------------------------------------------

def test_on_a_still_noisy_clip_of_a_real_face_the_filter_cuts_the_trackers_jitter():
    """A photo held still in front of a noisy camera (sensor noise, JPEG) through the real tracker."""
    import cv2

    from facewire.tracker.ibug68 import read_pts, to_ibug68
    from facewire.tracker.tracking import FaceTracker, TrackingConfig
    photo = data_path("images", "aflw2000_image00041.jpg")
    image = cv2.imread(str(photo))
    truth = read_pts(photo.with_suffix(".pts"))
    eye = float(np.linalg.norm(truth[36] - truth[45]))
    scale = 80.0 / eye                                    # a webcam-sized face in a 640x360 frame
    m = np.array([[scale, 0, 320 - scale * truth[:, 0].mean()], [0, scale, 180 - scale * truth[:, 1].mean()]])
    frame = cv2.warpAffine(image, m, (640, 360), borderMode=cv2.BORDER_REPLICATE)
    rng = np.random.default_rng(7)
    tracker, smoother = FaceTracker(TrackingConfig()), FaceSmoother()
    raw, smooth = [], []
    for k in range(40):
        noisy = np.clip(frame + rng.normal(0, 4.0, frame.shape), 0, 255).astype(np.uint8)
        decoded = cv2.imdecode(cv2.imencode(".jpg", noisy, [cv2.IMWRITE_JPEG_QUALITY, 80])[1], cv2.IMREAD_COLOR)
        faces = tracker.update(decoded)
        assert len(faces) == 1, f"frame {k}: {len(faces)} faces"
        mesh = faces[0].mesh.points
        raw.append(to_ibug68(mesh))
        smooth.append(to_ibug68(smoother.apply(faces[0].id, k * DT, {"points": mesh})["points"]))
    true_pts = truth @ m[:, :2].T + m[:, 2]
    assert np.linalg.norm(raw[-1] - true_pts, axis=1).mean() / 80.0 < 0.08   # it tracks the right face

    def jitter(points):     # RMS frame-to-frame motion after the first 5 frames, % of the eye distance
        p = np.array(points[5:], np.float64)
        return 100 * math.sqrt(np.mean(np.sum(np.diff(p, axis=0) ** 2, axis=2))) / 80.0

    j_raw, j_smooth = jitter(raw), jitter(smooth)
    assert j_raw > 0.05                                  # the noise does shake the tracker
    assert j_smooth < j_raw / 3, (j_raw, j_smooth)
    # and the smoothed face stays where the raw one is (no drift)
    assert np.linalg.norm(np.mean(smooth[5:], axis=0) - np.mean(raw[5:], axis=0), axis=1).mean() / 80.0 < 0.01
