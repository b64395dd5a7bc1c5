import re

import pytest

from kubepay.model.labels import is_label_value, label_value, naming

# The API server's rule for label values (apimachinery IsValidLabelValue).
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


@pytest.mark.parametrize("value", ["order-1111", "A_b.c-9", "x" * 63, ""])
def test_valid_values_stay_as_they_are(value: str) -> None:
    assert is_label_value(value) and label_value(value) == value


@pytest.mark.parametrize("value", ["x" * 64, "a" * 253, "pay-" + "z" * 70 + ".example", "-leading", "trailing.",
                                   "A-1001/x", "Ünïcode order", "--", "/"])
def test_other_values_become_valid_distinct_and_stable(value: str) -> None:
    label = label_value(value)
    assert len(label) <= 63 and LABEL_VALUE.fullmatch(label), label
    assert label_value(value) == label
    assert label != label_value(value + "x")


def test_a_long_name_keeps_a_readable_prefix_and_the_annotation_keeps_it_whole() -> None:
    name = "payment-for-the-quarterly-subscription-of-customer-4711-in-the-eu-region"
    assert len(name) > 63
    labels, annotations = naming("kubepay.io/payment-intent", name)
    assert labels["kubepay.io/payment-intent"].startswith("payment-for-the-quarterly-subscription-of-cus")
    assert annotations == {"kubepay.io/payment-intent": name}
