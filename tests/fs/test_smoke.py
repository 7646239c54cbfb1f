from tests.mounting import sh


def test_cat_rtmr3_of_default_td(mnt):
    out = sh(f"cat {mnt.path('rtmr3')}", check=True).stdout
    assert out == b"0" * 96 + b"\n"
