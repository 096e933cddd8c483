"""The ARKit name table every blendshape output spells from."""
from facewire.client.arkit import ARKIT_NAMES, MEDIAPIPE_ORDER, ifacialmocap_name, vmc_name


def test_mediapipe_order_is_neutral_then_apples_names_alphabetically_without_tongue_out():
    assert MEDIAPIPE_ORDER[0] == "_neutral"
    assert list(MEDIAPIPE_ORDER[1:]) == sorted(MEDIAPIPE_ORDER[1:])
    assert MEDIAPIPE_ORDER.index("jawOpen") == 25 and MEDIAPIPE_ORDER.index("noseSneerRight") == 51
    assert "tongueOut" not in MEDIAPIPE_ORDER


def test_fifty_two_distinct_apple_names_with_tongue_out_last():
    assert len(ARKIT_NAMES) == len(set(ARKIT_NAMES)) == 52
    assert ARKIT_NAMES[-1] == "tongueOut"
    assert sum(n.endswith("Left") for n in ARKIT_NAMES) == sum(n.endswith("Right") for n in ARKIT_NAMES) == 20


def test_protocol_spellings():
    assert vmc_name("eyeBlinkLeft") == "EyeBlinkLeft" and vmc_name("tongueOut") == "TongueOut"
    assert ifacialmocap_name("eyeBlinkLeft") == "eyeBlink_L"
    assert ifacialmocap_name("mouthSmileRight") == "mouthSmile_R"
    assert ifacialmocap_name("jawOpen") == "jawOpen"
    assert len({ifacialmocap_name(n) for n in ARKIT_NAMES}) == 52
