// The API as the page calls it: this server only, with the key the artist saved in this
// browser, and every error as the API's own {code, message, details} and Retry-After.

export const KEY_STORE = "pixelscene.apiKey";

export class ApiError extends Error {
  constructor(status, error, retryAfter = null) {
    super(error.message);
    this.status = status;
    this.code = error.code;
    this.details = error.details || null;
    this.retryAfter = retryAfter;
  }
}

export function apiKey() {
  return localStorage.getItem(KEY_STORE) || "";
}

/** fetch() with the key; resolves to the Response when it is 2xx, else throws ApiError
 * carrying the API's own {code, message, details} and Retry-After. */
export async function api(method, path, body) {
  const headers = {};
  const key = apiKey();
  if (key) headers.Authorization = `Bearer ${key}`;
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, { code: "network", message: `the server did not answer (${e.message})` });
  }
  if (response.ok) return response;
  let error = null;
  try {
    error = (await response.json()).error;
  } catch {
    // not JSON: a proxy's page; fall back to the status line
  }
  if (!error || typeof error.message !== "string") {
    const message = `HTTP ${response.status} ${response.statusText}`;
    error = { code: `http_${response.status}`, message };
  }
  const retry = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  throw new ApiError(response.status, error, Number.isFinite(retry) ? retry : null);
}

export const apiJson = async (method, path, body) => (await api(method, path, body)).json();
