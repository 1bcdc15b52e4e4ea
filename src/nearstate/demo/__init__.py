"""The one-command demo (``nearstate demo``) and the sample content it makes.

- :mod:`nearstate.demo.run`: set-up (write store, login, films, samples, first version)
  and the plan of the services it runs; the verb itself is in :mod:`nearstate.cli.demo`.
- :mod:`nearstate.demo.samples`: sample stories and a home layout on the real films.

The demo is an app of the platform: it imports the store, :mod:`nearstate.content` and
:mod:`nearstate.web`, never :mod:`nearstate.bench`.
"""
