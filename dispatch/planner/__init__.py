"""Route planning: travel-time model, the problem, the solver (PyVRP) and why orders are left out.

No Django models here: dispatch.planning turns the database into a `Problem` and a `Solution`
back into draft routes, and `manage.py solve_vrp` builds a `Problem` from the exchange format.
Both then call the same `solve()`.
"""
