import pytest

# Support modules holding assertions that tests share: pytest explains their failures too.
pytest.register_assert_rewrite("tests.mcp_support")
