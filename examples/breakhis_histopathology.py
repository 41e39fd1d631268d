"""BreakHis histopathology: benign vs malignant, grouped by patient.

Labels, subtypes, patient ids and magnifications are parsed from the file
names (Spanhol et al., IEEE TBME 63(7) 2016); images of one patient never
straddle folds. ConvNet+SVM against colour-texture baselines.

    python examples/breakhis_histopathology.py path/to/BreaKHis_v1
"""

from _common import parse_args, run

from featurepipe.datasets import load_breakhis

if __name__ == "__main__":
    args = parse_args(__doc__.splitlines()[0], "FEATUREPIPE_BREAKHIS",
                      ["convnet_svm_linear", "convnet_elm", "lbp_svm", "hybrid_svm"])
    run(load_breakhis(args.root), args)
