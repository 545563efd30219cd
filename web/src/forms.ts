// The sign-in forms: the credentials for the target (SSH or RDP), and the
// questions of a keyboard-interactive challenge. Secrets live only in the
// form's inputs, which are emptied once read; the forms never navigate
// (method "dialog" outside a dialog submits nowhere, and the SSH forms'
// inputs have no name), so nothing typed can end up in a URL even if a
// handler failed. The desktop form's inputs are named (user, password,
// domain) for password managers and the browser tests.
import { field, h } from "./dom";
import type { Credentials, Hello, Prompt } from "./protocol";

/** Keys are a few KiB; a text message may not exceed 64 KiB. */
const maxKeyBytes = 16 * 1024;

export interface CredentialOptions {
  hello: Hello;
  /** The login to offer first: the one used last on this page. */
  login: string;
  /** Why the previous attempt failed. */
  error?: string;
}

/** credentialForm asks for a login name and, unless the bastion signs a certificate, a password or a key. */
export function credentialForm(opts: CredentialOptions, submit: (login: string, creds: Credentials) => void): HTMLFormElement {
  const { hello } = opts;
  const error = h("p", { className: "error", hidden: !opts.error, textContent: opts.error ?? "", attrs: { role: "alert" } });
  const login = loginControl(hello.logins, opts.login);
  const controls = h("fieldset", {}, field("Login name", login));
  const form = h("form", { className: "signin", method: "dialog" }, h("h2", { textContent: `Sign in to ${hello.target}` }), error, controls);

  let read: () => Promise<Credentials> = async () => ({});
  if (hello.certificate) {
    controls.append(h("p", { className: "hint", textContent: "The bastion signs you in with a certificate: no password is needed." }));
  } else {
    // The login is known when it was used before or is the only one.
    const secrets = secretControls(opts.login !== "" || hello.logins?.length === 1);
    controls.append(secrets.element);
    read = secrets.read;
  }
  controls.append(h("button", { type: "submit", textContent: "Connect" }));

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const name = login.value.trim();
    if (!name) return;
    controls.disabled = true;
    read().then(
      (creds) => submit(name, creds),
      (err: Error) => {
        error.textContent = err.message;
        error.hidden = false;
        controls.disabled = false;
      },
    );
  });
  return form;
}

function loginControl(logins: string[] | undefined, last: string): HTMLInputElement | HTMLSelectElement {
  if (!logins?.length) {
    return h("input", { type: "text", value: last, required: true, autocomplete: "username", spellcheck: false, autocapitalize: "none" });
  }
  return h("select", { required: true }, ...logins.map((l) => h("option", { value: l, textContent: l, selected: l === last })));
}

/**
 * secretControls offers a password, or a private key from a file or pasted,
 * with its passphrase. read collects the one chosen and empties the inputs.
 */
function secretControls(focusSecret: boolean): { element: HTMLElement; read: () => Promise<Credentials> } {
  const password = h("input", { type: "password", autocomplete: "off", autofocus: focusSecret });
  const keyFile = h("input", { type: "file" });
  const keyText = h("textarea", { rows: 4, spellcheck: false, autocomplete: "off", placeholder: "-----BEGIN OPENSSH PRIVATE KEY-----" });
  const passphrase = h("input", { type: "password", autocomplete: "off" });
  const usePassword = h("input", { type: "radio", name: "method", checked: true });
  const useKey = h("input", { type: "radio", name: "method" });
  const passwordPart = h("div", {}, field("Password", password));
  const keyPart = h(
    "div",
    { hidden: true },
    field("Private key file", keyFile),
    field("or paste the key", keyText),
    field("Passphrase", passphrase, "only if the key is encrypted"),
  );
  const choose = () => {
    passwordPart.hidden = !usePassword.checked;
    keyPart.hidden = usePassword.checked;
  };
  usePassword.addEventListener("change", choose);
  useKey.addEventListener("change", choose);

  const element = h(
    "div",
    {},
    h(
      "fieldset",
      { className: "method" },
      h("legend", { textContent: "Sign in with" }),
      h("label", {}, usePassword, " Password"),
      h("label", {}, useKey, " Private key"),
    ),
    passwordPart,
    keyPart,
  );

  const collect = async (): Promise<Credentials> => {
    if (usePassword.checked) return { password: password.value };
    const file = keyFile.files?.[0];
    if (file && file.size > maxKeyBytes) throw new Error("That file is too large to be a private key.");
    const key = file ? await file.text() : keyText.value;
    if (!key.trim()) throw new Error("Choose a key file or paste a key.");
    return passphrase.value ? { private_key: key, passphrase: passphrase.value } : { private_key: key };
  };
  const read = async (): Promise<Credentials> => {
    const creds = await collect();
    for (const input of [password, keyFile, keyText, passphrase]) input.value = "";
    return creds;
  };
  return { element, read };
}

/** promptForm asks the questions of a keyboard-interactive challenge. */
export function promptForm(prompt: Prompt, submit: (answers: string[]) => void): HTMLFormElement {
  const inputs = prompt.prompts.map((p) =>
    h("input", { type: p.echo ? "text" : "password", autocomplete: "off", spellcheck: false }),
  );
  const controls = h(
    "fieldset",
    {},
    ...prompt.prompts.map((p, i) => field(p.text.trim(), inputs[i]!)),
    h("button", { type: "submit", textContent: "Continue" }),
  );
  const form = h("form", { className: "signin", method: "dialog" }, h("h2", { textContent: prompt.name || "The machine asks" }));
  if (prompt.instruction) form.append(h("p", { className: "instruction", textContent: prompt.instruction }));
  form.append(controls);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const answers = inputs.map((i) => i.value);
    for (const i of inputs) i.value = "";
    controls.disabled = true;
    submit(answers);
  });
  return form;
}

export interface DesktopCredentials {
  user: string;
  password: string;
  /** Empty when not given. */
  domain: string;
}

export interface DesktopFormOptions {
  target: string;
  /** The user name and domain to offer: the ones used last on this page. */
  user: string;
  domain: string;
  /** Why the previous attempt failed. */
  error?: string;
}

/**
 * desktopForm asks for the Windows account to sign in to a remote desktop
 * with. A user name typed as DOMAIN\user, with no domain given, is split.
 */
export function desktopForm(opts: DesktopFormOptions, submit: (creds: DesktopCredentials) => void): HTMLFormElement {
  const error = h("p", { className: "error", hidden: !opts.error, textContent: opts.error ?? "", attrs: { role: "alert" } });
  const user = h("input", {
    type: "text",
    name: "user",
    value: opts.user,
    required: true,
    autocomplete: "username",
    spellcheck: false,
    autocapitalize: "none",
    autofocus: opts.user === "",
  });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password", autofocus: opts.user !== "" });
  const domain = h("input", { type: "text", name: "domain", value: opts.domain, autocomplete: "off", spellcheck: false, autocapitalize: "none" });
  const controls = h(
    "fieldset",
    {},
    field("User name", user),
    field("Password", password),
    field("Domain", domain, "optional"),
    h("button", { type: "submit", textContent: "Connect" }),
  );
  const form = h("form", { className: "signin", method: "dialog" }, h("h2", { textContent: `Sign in to ${opts.target}` }), error, controls);
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    let name = user.value.trim();
    let dom = domain.value.trim();
    const slash = name.indexOf("\\");
    if (!dom && slash > 0) {
      dom = name.slice(0, slash);
      name = name.slice(slash + 1);
    }
    if (!name) return;
    const creds = { user: name, password: password.value, domain: dom };
    password.value = "";
    controls.disabled = true;
    submit(creds);
  });
  return form;
}
