"""What the pages share: the sidebar and the selection it makes (:mod:`pages.ui.sidebar`), the package's loaders
behind Streamlit's caches (:mod:`pages.ui.cached`), scores with a progress bar (:mod:`pages.ui.scoring`), the
session keys pages pass between them (:mod:`pages.ui.state`), Plotly figures (:mod:`pages.ui.figures`), the parts
of single pages kept out of the page files (agreement, entropy_view, last_run, model_source, prediction,
sweep_form, tour_figures) and Streamlit's multipage workaround (:mod:`pages.ui.router`).

The pages themselves are the files directly in pages/ (app.py's st.navigation lists them); nothing here is a page.
"""
