// The log-in and register pages.

import { bindAccountForm, bindLogout } from "./session.js";

bindLogout();
bindAccountForm(document.getElementById("account-form"));
