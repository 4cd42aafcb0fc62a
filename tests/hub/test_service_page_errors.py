"""The one error page of Qustody's service pages (auditor, instructor): what it says,
and that a message naming user input cannot inject markup."""

from __future__ import annotations

from hub_ext.audit.web import AuditHandler
from hub_ext.courses.web import CourseHandler
from hub_ext.service_page import ERROR_PAGE


def test_the_error_page_names_the_page_and_escapes_the_message() -> None:
    html = ERROR_PAGE.generate(
        status=403, reason="Forbidden", title=CourseHandler.page_title,
        message='<script>alert(1)</script> is not an instructor of "course-101"',
    ).decode()
    assert "<title>403 Forbidden · Qustody courses</title>" in html
    assert '<h1 id="error-status">403 Forbidden</h1>' in html
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert AuditHandler.page_title == "Qustody audit"
