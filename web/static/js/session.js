// Logging in, registering and logging out.

import { api, explain } from "./api.js";
import { toast } from "./alerts.js";

const USERNAME = /^[A-Za-z0-9_.-]{3,32}$/;

/** Every "Log out" button: end the session, then start afresh on the board. */
export function bindLogout() {
  for (const button of document.querySelectorAll("[data-action=logout]")) {
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await api("POST", "/api/auth/logout");
        window.location.assign("/");
      } catch (error) {
        button.disabled = false;
        toast(explain(error), { error: true });
      }
    });
  }
}

/** The log-in or register form: checked here first, then by the server, errors by their field. */
export function bindAccountForm(form) {
  const fields = { username: form.elements.username, password: form.elements.password };
  const formError = form.querySelector(".form-error");
  const register = form.dataset.mode === "register";

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clearErrors();
    const username = fields.username.value.trim();
    const password = fields.password.value;
    const problems = register ? check(username, password) : {};
    if (!username) problems.username = "Enter your username.";
    if (!password) problems.password = "Enter your password.";
    if (Object.keys(problems).length) {
      showErrors(problems);
      return;
    }
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    try {
      await api("POST", register ? "/api/auth/register" : "/api/auth/login", { body: { username, password } });
      window.location.assign("/");
    } catch (error) {
      submit.disabled = false;
      if (error.code === "username_taken") {
        showErrors({ username: "That username is taken. Choose another." });
      } else if (error.code === "invalid_credentials") {
        showFormError("Wrong username or password.");
      } else if (error.code === "validation_error" && error.details.length) {
        showErrors(Object.fromEntries(error.details.map((detail) => [detail.field, detail.message])));
      } else {
        showFormError(explain(error));
      }
    }
  });
  // The page serves the button disabled: a click before this point would have sent the
  // form the browser's way, the password in the address.
  form.querySelector("button[type=submit]").disabled = false;

  function check(username, password) {
    const problems = {};
    if (!USERNAME.test(username)) problems.username = "Use 3 to 32 letters, digits, dots, dashes or underscores.";
    if (password.length < 8) problems.password = "Use at least 8 characters.";
    else if (new TextEncoder().encode(password).length > 72) problems.password = "Use at most 72 bytes (fewer characters, or fewer accented ones).";
    return problems;
  }

  function showErrors(problems) {
    let first = null;
    for (const [name, message] of Object.entries(problems)) {
      const input = fields[name];
      if (!input) {
        showFormError(message);
        continue;
      }
      const note = form.querySelector(`#${name}-error`);
      note.textContent = message;
      note.hidden = false;
      input.setAttribute("aria-invalid", "true");
      first = first || input;
    }
    if (first) first.focus();
  }

  function showFormError(message) {
    formError.textContent = message;
    formError.hidden = false;
  }

  function clearErrors() {
    formError.hidden = true;
    for (const [name, input] of Object.entries(fields)) {
      input.removeAttribute("aria-invalid");
      form.querySelector(`#${name}-error`).hidden = true;
    }
  }
}
