// Calls to the portal's JSON API from a client page.

/** SessionExpired is a 403 from the API: the web session is gone or no longer allows this. */
export class SessionExpired extends Error {}

export interface Ticket {
  ticket: string;
  /** The connect page for the ticket, a path on this origin. */
  url: string;
}

/** newTicket asks POST /api/connect for a new connect ticket, as a Reconnect does. */
export async function newTicket(target: string, protocol: string, csrf: string): Promise<Ticket> {
  const res = await fetch("/api/connect", {
    method: "POST",
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: JSON.stringify({ target, protocol }),
  });
  const body: unknown = await res.json().catch(() => undefined);
  const field = (name: string): string | undefined => {
    const v = typeof body === "object" && body !== null ? (body as Record<string, unknown>)[name] : undefined;
    return typeof v === "string" ? v : undefined;
  };
  if (res.status === 403) throw new SessionExpired(field("error") ?? "forbidden");
  if (!res.ok) throw new Error(field("error") ?? `the bastion answered ${res.status} ${res.statusText}`);
  const ticket = field("ticket");
  const url = field("url");
  if (!ticket || !url || !/^\/(?!\/)/.test(url)) throw new Error("the bastion's answer has no ticket");
  return { ticket, url };
}
