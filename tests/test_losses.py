"""kdtutor.pitfalls: each of the field's known kd_loss bugs fails at least one property the real loss has.

The properties (the formula, the gradient T(q - p)/B, zero at equal logits, stored golden values) are checks on
*any* implementation of kd_loss, defined in tests/methods/helpers.py; tests/methods/test_hinton.py shows that
kdtutor's kd_loss has every one of them. The methods' own tests are in tests/methods/.
"""

import pytest
from methods.helpers import PROPERTIES

from kdtutor.pitfalls import BUGS as KNOWN_BUGS

BUGS = list(KNOWN_BUGS.values())  # kdtutor.pitfalls: the known bugs, wrong on purpose


@pytest.mark.parametrize("bug", BUGS, ids=lambda b: b.__name__)
def test_each_known_bug_fails_a_property(bug):
    failed = [p.__name__ for p in PROPERTIES if not p(bug)]
    assert failed, f"{bug.__name__} passes every property: the tests could not catch it"
