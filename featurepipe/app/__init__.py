"""``featurepipe serve``: a local web app to try a saved model in the browser.

:mod:`featurepipe.app.core` holds the logic as plain functions (tested without a browser);
``streamlit_app.py`` is the thin Streamlit page that lays them out, started by
``featurepipe serve MODEL`` (needs ``pip install 'featurepipe[app]'``).
"""
