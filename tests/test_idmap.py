"""IdMap (exchange/idmap.py) answers as a dict would, whatever ids come and go."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from exchange.idmap import BITS, IdMap

ids = st.integers(min_value=0, max_value=5 << BITS)  # several ranges, and ids at their edges
ops = st.lists(st.tuples(st.sampled_from(["set", "pop", "pop_default", "get"]), ids), max_size=300)


@given(ops)
def test_an_idmap_answers_as_a_dict_does(steps: list[tuple[str, int]]) -> None:
    m: IdMap[int] = IdMap()
    d: dict[int, int] = {}
    for n, (op, key) in enumerate(steps):
        if op == "set":
            m[key] = d[key] = n
        elif op == "pop":
            assert (key in m) == (key in d)
            if key in d:
                assert m.pop(key) == d.pop(key)
        elif op == "pop_default":
            assert m.pop(key, -1) == d.pop(key, -1)
        else:
            assert m.get(key) == d.get(key)
        assert len(m) == len(d) and bool(m) == bool(d)
    assert sorted(m.items()) == sorted(d.items()) and sorted(m) == sorted(d) and sorted(m.values()) == sorted(d.values())
    assert all(m[k] == v for k, v in d.items())


@given(st.lists(ids, unique=True))
def test_many_at_once_sorted_or_not_are_the_same_entries(keys: list[int]) -> None:
    for order in (sorted(keys), keys):
        m: IdMap[int] = IdMap()
        m[7] = -7  # (one there already: counted once)
        m.update_sorted(order, [k * 2 for k in order])
        want = {7: -7, **{k: k * 2 for k in keys}}
        assert dict(m.items()) == want and len(m) == len(want)


def test_a_missing_id_is_a_key_error_naming_it() -> None:
    m: IdMap[str] = IdMap([(1, "a")])
    try:
        m[(1 << BITS) + 1]
    except KeyError as exc:
        assert exc.args == ((1 << BITS) + 1,)
    else:
        raise AssertionError("no KeyError")
