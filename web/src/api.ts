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

/** How a remote desktop ended, as the bastion saw it (GET /api/rdp/outcome). */
export interface RDPOutcome {
  /**
   * at_capacity, denied, expired, unreachable, certificate, negotiation,
   * killed, idle_timeout, max_duration, client_closed, target_closed or error.
   */
  reason: string;
  /** A sentence for the user, shown as is. */
  message: string;
  /** The bastion's session ID, when one was opened. */
  session?: string;
}

/**
 * rdpOutcome asks how the desktop opened with ticket ended. The bastion may
 * write it a moment after the WebSocket closed, so a 404 is asked again for
 * about 1.5 s; undefined means that no outcome is known.
 */
export async function rdpOutcome(ticket: string): Promise<RDPOutcome | undefined> {
  const retries = 5;
  const interval = 300; // ms
  for (let i = 0; ; i++) {
    let res: Response;
    try {
      res = await fetch(`/api/rdp/outcome?ticket=${encodeURIComponent(ticket)}`, { credentials: "same-origin", cache: "no-store" });
    } catch {
      return undefined;
    }
    if (res.ok) {
      const body: unknown = await res.json().catch(() => undefined);
      if (typeof body !== "object" || body === null) return undefined;
      const { reason, message, session } = body as Record<string, unknown>;
      if (typeof reason !== "string" || typeof message !== "string") return undefined;
      return typeof session === "string" && session ? { reason, message, session } : { reason, message };
    }
    if (res.status !== 404 || i >= retries) return undefined;
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

/**
 * rdpWatchers asks who watches the desktop opened with ticket live (auditors),
 * for the page's banner; an empty list when no one does or the bastion does
 * not say.
 */
export async function rdpWatchers(ticket: string): Promise<string[]> {
  try {
    const res = await fetch(`/api/rdp/watchers?ticket=${encodeURIComponent(ticket)}`, { credentials: "same-origin", cache: "no-store" });
    if (!res.ok) return [];
    const body = (await res.json()) as { watchers?: unknown };
    return Array.isArray(body.watchers) ? body.watchers.filter((w): w is string => typeof w === "string") : [];
  } catch {
    return [];
  }
}
