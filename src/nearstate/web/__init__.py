"""What serves HTTP: the public site (:mod:`.site`), the editor app (:mod:`.editor`), and
what they share — auth, media routes, settings, templates and static files — plus
:mod:`.processes`, the supervisor that starts and stops the platform's processes for the
demo and the benchmarks. Imports the store and :mod:`nearstate.content`, never
:mod:`nearstate.demo`, :mod:`nearstate.bench` or :mod:`nearstate.cli`."""
