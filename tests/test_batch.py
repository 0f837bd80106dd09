from dualpm_addon.batch import MAX_EXIT, exit_code, output_names


def test_output_names_are_unique():
    assert output_names(["a/cat.jpg", "b/cat.png", "dog.webp", "c/cat.tif"]) == ["cat", "cat_2", "dog", "cat_3"]
    assert output_names(["dir/"], "map") == ["map"]


def test_exit_code_counts_failures_below_the_shells_reserved_codes():
    assert exit_code(0) == 0 and exit_code(3) == 3
    assert exit_code(1000) == MAX_EXIT == 125
