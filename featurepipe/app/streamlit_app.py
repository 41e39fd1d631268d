"""The Streamlit page of ``featurepipe serve`` (layout only; the logic is in :mod:`featurepipe.app.core`).

Run by ``featurepipe serve MODEL``, which starts
``streamlit run streamlit_app.py -- --model MODEL [--trust TYPE ...]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import streamlit as st

from featurepipe.app import core



def _arguments():
    parser = argparse.ArgumentParser(prog="featurepipe serve (page)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--trust", action="append", default=[])
    return parser.parse_args()


@st.cache_resource(show_spinner="Loading the model…")
def _open(path, mtime, trusted):  # mtime: a changed file is loaded again
    return core.open_model(path, trusted=list(trusted))


def _show_card(loaded):
    if loaded.card_markdown:
        st.caption(loaded.card_note)
        st.markdown(loaded.card_markdown)
    else:
        st.info(f"No model card: {loaded.card_note}")


def _show_result(loaded, upload):
    st.subheader(upload.name)
    if upload.row["error"]:
        st.error(f"Could not classify {upload.name}: {upload.row['error']}")
        return
    image_col, cam_col, score_col = st.columns([1, 1, 2])
    with image_col:
        st.image(upload.image.clip(0, 1), caption=upload.name, width="stretch")
    with score_col:
        st.markdown(f"Predicted class: **{upload.row['prediction']}**")
        bars, kind = core.score_bars(upload.row, loaded.classes, calibrated=core.is_calibrated(loaded.model))
        if bars:
            st.markdown(core.bars_html(bars, kind), unsafe_allow_html=True)
        if kind in ("score", "estimate"):
            st.caption("This model has no calibrated probabilities: the values are "
                       + ("decision scores" if kind == "score" else "its own probability estimates")
                       + ", not percentages.")
    with cam_col:
        with st.spinner("Class activation map…"):
            overlay, note = core.activation_overlay(loaded.model, upload.path, upload.row)
        if overlay is not None:
            st.image(overlay, caption=note, width="stretch")
        else:
            st.caption(note)


def main():
    args = _arguments()
    st.set_page_config(page_title="featurepipe: try a model", layout="wide")
    path = os.path.abspath(args.model)
    mtime = os.path.getmtime(path) if os.path.exists(path) else None
    loaded = _open(path, mtime, tuple(args.trust))
    st.title("featurepipe: try a model")
    st.caption(f"Model file: {path} — research use only, NOT a medical device.")
    if loaded.error:
        st.error(f"This model file was not loaded: {loaded.error}")
        st.stop()
    if loaded.synthetic:
        st.warning("SYNTHETIC: this model was trained on generated demo images, not real medical data.")
    problem = core.serving_problem(loaded.model)
    tab_images, tab_batch, tab_card = st.tabs(["Classify images", "Folder to CSV", "Model card"])
    with tab_card:
        _show_card(loaded)
    if problem:
        with tab_images:
            st.error(problem)
        with tab_batch:
            st.error(problem)
        return
    with tab_images:
        st.markdown(f"Classes: {', '.join(loaded.classes)}")
        files = st.file_uploader("Images (PNG, JPEG, GIF, TIFF, BMP, PGM)", type=list(core.UPLOAD_TYPES),
                                 accept_multiple_files=True)
        if files:
            # the uploads live on disk only while this run of the page shows them
            with tempfile.TemporaryDirectory(prefix="featurepipe-serve-") as workdir:
                with st.spinner("Classifying…"):
                    results = core.classify_uploads(loaded.model, [(f.name, f.getvalue()) for f in files], workdir)
                st.download_button("Download these results (CSV)", core.predictions_csv([r.row for r in results]),
                                   file_name="predictions.csv", mime="text/csv")
                for upload in results:
                    _show_result(loaded, upload)
    with tab_batch:
        st.markdown("Classify every image under a folder **on this computer**; the CSV has the columns of "
                    "`featurepipe predict`.")
        folder = st.text_input("Folder")
        if folder:
            try:
                with st.spinner("Classifying the folder…"):
                    rows, notes = core.classify_folder(loaded.model, folder)
            except ValueError as exc:
                st.error(str(exc))
            else:
                for note in notes:
                    st.caption(note)
                failed = [r for r in rows if r["error"]]
                st.markdown(f"{len(rows) - len(failed)} of {len(rows)} images classified"
                            + (f"; {len(failed)} failed (see the error column)" if failed else ""))
                csv_text = core.predictions_csv(rows)
                st.download_button("Download predictions.csv", csv_text, file_name="predictions.csv",
                                   mime="text/csv")
                st.dataframe(rows)


main()
