"""The web workspace for the centres (``ehc serve``): upload, see every fault, fix it, submit, download.

:mod:`~pipeline.web.app` assembles the ASGI app; :mod:`~pipeline.web.pages`
and :mod:`~pipeline.web.admin` are the pages; :mod:`~pipeline.web.auth`
logs people in; :mod:`~pipeline.web.store` is the SQLite state;
:mod:`~pipeline.web.runner` runs dry runs (:mod:`~pipeline.web.checking`),
reports (:mod:`~pipeline.web.downloads`) and submissions
(:mod:`~pipeline.web.submitting`) away from the pages;
:mod:`~pipeline.web.editing` re-checks an edited row.  Every call into the
rest of ``ehc`` goes through :mod:`~pipeline.web.engine`.
"""
