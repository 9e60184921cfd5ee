"""The board in real Chromium: tasks, timers, alerts, live sync, accounts, safety, phones."""

from __future__ import annotations

import re
import time
from typing import Any, Literal

import pytest
from playwright.sync_api import BrowserContext, Locator, Page, expect

from tests.e2e.conftest import Watch, open_board, screenshot
from tests.integration.conftest import Server

pytestmark = pytest.mark.slow


def add_task(page: Page, title: str) -> Locator:
    page.locator("#new-title").fill(title)
    page.locator("#new-title").press("Enter")
    card = page.locator("li.task", has=page.get_by_role("heading", name=title, exact=True))
    expect(card).to_be_visible()
    return page.locator(f'li.task[data-id="{card.get_attribute("data-id")}"]')


def api_tasks(context: BrowserContext) -> list[dict[str, Any]]:
    """The visitor's tasks as the API has them (with the browser's own cookie)."""
    response = context.request.get("/api/tasks")
    assert response.ok, response.text()
    tasks: list[dict[str, Any]] = response.json()["tasks"]
    return tasks


def start_custom_timer(card: Locator, duration: str) -> None:
    card.get_by_label("Custom duration").fill(duration)
    card.get_by_label("Custom duration").press("Enter")


def test_a_guest_adds_edits_completes_and_deletes_a_task(
    page: Page, context: BrowserContext
) -> None:
    expect(page.locator(".account")).to_contain_text("Guest")
    card = add_task(page, "Buy milk")
    expect(page.locator("#new-title")).to_be_focused()
    expect(page.locator("#new-title")).to_have_value("")

    card.get_by_role("button", name="Edit Buy milk").click()
    card.get_by_label("Title").fill("Buy oat milk")
    card.get_by_label("Notes").fill("two litres")
    card.get_by_label("Title").press("Enter")
    expect(card.locator(".title")).to_have_text("Buy oat milk")
    expect(card.locator(".notes")).to_have_text("two litres")

    card.get_by_role("checkbox", name="Done: Buy oat milk").check()
    expect(page.locator("#done-tasks li.task")).to_have_count(1)
    expect(page.locator("#open-tasks li.task")).to_have_count(0)
    [stored] = api_tasks(context)
    assert (stored["title"], stored["notes"], stored["done"]) == (
        "Buy oat milk",
        "two litres",
        True,
    )

    card.get_by_role("button", name="Delete Buy oat milk").click()
    expect(card).to_be_hidden()
    page.locator(".toast").get_by_role("button", name="Undo").click()
    expect(card).to_be_visible()
    assert len(api_tasks(context)) == 1

    card.get_by_role("button", name="Delete Buy oat milk").click()
    page.locator(".toast").get_by_role("button", name="Dismiss").click()
    expect(page.locator("li.task[data-id]:not([hidden])")).to_have_count(0)
    _wait_until(lambda: api_tasks(context) == [])


def test_editing_is_cancelled_with_escape(page: Page) -> None:
    card = add_task(page, "Write report")
    card.get_by_role("button", name="Edit Write report").click()
    card.get_by_label("Title").fill("Something else")
    card.get_by_label("Title").press("Escape")
    expect(card.locator(".title")).to_have_text("Write report")
    expect(card.get_by_role("button", name="Edit Write report")).to_be_focused()


def test_a_two_second_timer_counts_down_and_ends_with_an_alert_a_notification_and_a_sound(
    page: Page,
) -> None:
    card = add_task(page, "Tea")
    assert page.evaluate("window.__permissionRequests") == 0  # never asked on page load

    start_custom_timer(card, "2s")
    expect(card.locator(".timer")).to_have_attribute("data-state", "running")
    expect(card.locator(".countdown")).to_have_text(re.compile(r"^00:0[12]$"))
    expect(page).to_have_title(re.compile(r"^00:0[12] · Tea"))
    assert page.evaluate("window.__permissionRequests") == 1

    alert = page.get_by_role("alert").filter(has_text="Time's up")
    expect(alert).to_contain_text("Tea", timeout=4000)
    expect(card.locator(".timer")).to_have_attribute("data-state", "finished")
    expect(card.locator(".countdown")).to_have_text("00:00")
    expect(card.locator(".tracked-value")).to_have_text("2s")
    assert page.evaluate("window.__notifications") == [
        {"title": "Time's up", "body": "Tea", "tag": f"timer-{card.get_attribute('data-id')}"}
    ]
    assert any(src.endswith("/static/sounds/chime.wav") for src in page.evaluate("window.__sounds"))
    expect(page).to_have_title("Tracker")


def test_a_timer_is_paused_resumed_and_stopped(page: Page) -> None:
    card = add_task(page, "Focus")
    card.get_by_role("button", name="Start a 25-minute timer").click()
    expect(card.locator(".countdown")).to_have_text(re.compile(r"^2[45]:\d\d$"))
    card.get_by_role("button", name="Pause").click()
    expect(card.locator(".timer-state")).to_have_text("Paused")
    paused = card.locator(".countdown").inner_text()
    time.sleep(1.2)
    expect(card.locator(".countdown")).to_have_text(paused)  # a paused countdown stands still
    card.get_by_role("button", name="Resume").click()
    expect(card.locator(".timer-state")).to_have_text("Running")
    card.get_by_role("button", name="Stop").click()
    expect(card.locator(".timer")).to_have_attribute("data-state", "none")
    expect(card.get_by_role("button", name="Start a 5-minute timer")).to_be_visible()


def test_a_bad_custom_duration_is_explained_and_nothing_starts(
    page: Page, context: BrowserContext
) -> None:
    card = add_task(page, "Nap")
    start_custom_timer(card, "eight days")
    expect(page.locator(".toast.error")).to_contain_text("Type minutes")
    start_custom_timer(card, "200000")  # minutes: more than a week
    expect(page.locator(".toast.error").last).to_contain_text("1 second to 7 days")
    assert api_tasks(context)[0]["timer"] is None


def test_two_pages_of_the_same_guest_stay_in_sync(page: Page, context: BrowserContext) -> None:
    other = context.new_page()
    open_board(other)

    add_task(page, "Shared")
    mirror = other.locator("li.task", has_text="Shared")
    expect(mirror).to_be_visible()

    mirror.get_by_role("button", name="Start a 15-minute timer").click()
    card = page.locator("li.task", has_text="Shared")
    expect(card.locator(".timer")).to_have_attribute("data-state", "running")
    expect(card.locator(".countdown")).to_have_text(re.compile(r"^1[45]:\d\d$"))

    card.get_by_role("button", name="Pause").click()
    expect(card.locator(".timer-state")).to_have_text("Paused")
    expect(mirror.locator(".timer-state")).to_have_text("Paused")
    expect(mirror.locator(".countdown")).to_have_text(card.locator(".countdown").inner_text())

    mirror.get_by_role("button", name="Delete Shared").click()
    other.locator(".toast").get_by_role("button", name="Dismiss").click()
    expect(card).to_have_count(0)


def test_the_history_reads_as_words_and_local_times(page: Page) -> None:
    card = add_task(page, "Plan")
    card.get_by_role("button", name="Edit Plan").click()
    card.get_by_label("Title").fill("Plan the week")
    card.get_by_label("Title").press("Enter")
    card.get_by_role("button", name="Start a 45-minute timer").click()
    expect(card.locator(".timer")).to_have_attribute("data-state", "running")

    card.get_by_role("button", name="History of Plan the week").click()
    dialog = page.get_by_role("dialog", name="History of “Plan the week”")
    items = dialog.locator(".timeline li")
    expect(items).to_have_count(3)
    expect(items.nth(0)).to_contain_text("Created “Plan”")
    expect(items.nth(1)).to_contain_text("Renamed to “Plan the week”")
    expect(items.nth(2)).to_contain_text("Timer started for 45 minutes")
    expect(items.nth(2)).to_contain_text("by you")
    assert "T" not in items.nth(0).locator("time").inner_text()  # not a raw timestamp
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()


def test_registering_keeps_the_guest_tasks_and_log_out_then_log_in_brings_them_back(
    page: Page,
) -> None:
    add_task(page, "Kept across sign-up")
    page.get_by_role("link", name="Register").click()
    expect(page.locator(".lead")).to_contain_text("Your 1 task from this guest session")
    page.get_by_label("Username").fill("ada_e2e")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Register").click()

    page.locator("#status[data-state=live]").wait_for()
    expect(page.locator(".account")).to_contain_text("Signed in as ada_e2e")
    expect(page.locator("li.task", has_text="Kept across sign-up")).to_be_visible()

    page.get_by_role("button", name="Log out").click()
    page.locator("#status[data-state=live]").wait_for()
    expect(page.locator(".account")).to_contain_text("Guest")
    expect(page.locator("li.task[data-id]")).to_have_count(0)

    page.get_by_role("link", name="Log in").click()
    page.get_by_label("Username").fill("ada_e2e")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Log in").click()
    page.locator("#status[data-state=live]").wait_for()
    expect(page.locator("li.task", has_text="Kept across sign-up")).to_be_visible()


def test_account_form_errors_are_shown_by_their_field(page: Page, watch: Watch) -> None:
    watch.allow(r"status of 401")  # the browser logs the failed log-in request itself
    page.goto("/register")
    page.get_by_label("Username").fill("x")
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Register").click()
    expect(page.locator("#username-error")).to_contain_text("3 to 32")
    expect(page.locator("#password-error")).to_contain_text("at least 8")
    expect(page.get_by_label("Username")).to_be_focused()

    page.goto("/login")
    page.get_by_label("Username").fill("nobody_here")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")


def test_a_hostile_title_is_shown_as_text_everywhere(page: Page) -> None:
    hostile = "<img src=x onerror=alert(1)>"
    card = add_task(page, hostile)
    expect(card.locator(".title")).to_have_text(hostile)
    assert page.locator("main img").count() == 0

    page.reload()
    page.locator("#status[data-state=live]").wait_for()
    expect(card.locator(".title")).to_have_text(hostile)
    card.get_by_role("button", name=f"History of {hostile}").click()
    expect(page.get_by_role("dialog").locator(".timeline li")).to_contain_text(hostile)
    assert page.locator("img").count() == 0


def test_every_control_has_a_name_and_focus_is_visible(page: Page) -> None:
    add_task(page, "Named")
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll('main button, main input, main textarea')]
            .filter((el) => el.offsetParent !== null)
            .filter((el) => !(el.getAttribute('aria-label') || (el.labels && el.labels.length)
                              || el.textContent.trim()))
            .map((el) => el.outerHTML)"""
    )
    assert unnamed == []
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")


def test_a_lost_connection_is_shown_and_the_page_catches_up(
    page: Page, server: Server, context: BrowserContext, watch: Watch
) -> None:
    watch.allow(r"WebSocket connection to .* failed")
    add_task(page, "Before the restart")
    server.stop()
    expect(page.locator("#status")).to_have_attribute("data-state", "offline")
    expect(page.locator("#status")).to_contain_text("Reconnecting")

    server.start(same_port=True)
    response = context.request.post(
        "/api/tasks", data={"title": "While it was away"}, headers={"Origin": server.url}
    )
    assert response.status == 201, response.text()
    expect(page.locator("#status")).to_have_attribute("data-state", "live", timeout=15_000)
    expect(page.locator("li.task", has_text="While it was away")).to_be_visible()
    expect(page.locator("li.task", has_text="Before the restart")).to_be_visible()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_board_works_on_a_phone_and_looks_right_in_both_themes(
    context: BrowserContext, scheme: Literal["light", "dark"]
) -> None:
    phone = context.new_page()
    phone.set_viewport_size({"width": 375, "height": 740})
    phone.emulate_media(color_scheme=scheme)
    open_board(phone)
    card = add_task(phone, "On the go")
    add_task(phone, "A second task with a rather long title that has to wrap on a phone")
    card.get_by_role("button", name="Start a 5-minute timer").click()
    expect(card.locator(".timer")).to_have_attribute("data-state", "running")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 375  # nothing sideways
    assert screenshot(phone, f"board-phone-{scheme}").stat().st_size > 0

    phone.set_viewport_size({"width": 1280, "height": 860})
    assert screenshot(phone, f"board-desktop-{scheme}").stat().st_size > 0


def _wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
