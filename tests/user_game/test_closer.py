"""The user's own test of their game: the conformance suite, in one line."""

from envs.testing import conformance_test

test_closer_conforms = conformance_test("closer:closer")
