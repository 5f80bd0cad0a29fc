"""Studies: train candidates on one cohort, evaluate them on the test split and compare them."""
