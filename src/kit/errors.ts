/** The closed set of problem codes clients branch on, with the HTTP status of each (api-contract.md §2). */
export const PROBLEM_STATUS = {
  VALIDATION_FAILED: 400,
  MALFORMED_JSON: 400,
  UNAUTHENTICATED: 401,
  BAD_SIGNATURE: 401,
  INVALID_CREDENTIALS: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  ORDER_NOT_FOUND: 404,
  PRODUCT_NOT_FOUND: 404,
  COUPON_NOT_FOUND: 404,
  DEAD_LETTER_NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  NOT_ACCEPTABLE: 406,
  OUT_OF_STOCK: 409,
  INSUFFICIENT_FUNDS: 409,
  COUPON_UNAVAILABLE: 409,
  INSUFFICIENT_STOCK: 409,
  USE_STOCK_ADJUSTMENT: 409,
  INVALID_TRANSITION: 409,
  IDEMPOTENCY_KEY_IN_USE: 409,
  ORDER_NOT_PAYABLE: 409,
  TRANSITION_VETOED: 409,
  PLACEMENT_FAILED: 409,
  MAX_REDEMPTIONS_BELOW_REDEEMED: 409,
  DEAD_LETTER_NOT_OPEN: 409,
  NOTHING_TO_REDRIVE: 409,
  VERSION_MISMATCH: 412,
  PAYLOAD_TOO_LARGE: 413,
  URI_TOO_LONG: 414,
  UNSUPPORTED_MEDIA_TYPE: 415,
  UNKNOWN_PRODUCT: 422,
  AMOUNT_TOO_LARGE: 422,
  AMOUNT_MISMATCH: 422,
  IDEMPOTENCY_KEY_REUSED: 422,
  RATE_LIMITED: 429,
  INTERNAL: 500,
  SERVICE_UNAVAILABLE: 503,
} as const;

export type ProblemCode = keyof typeof PROBLEM_STATUS;

export interface FieldError {
  path: string;
  message: string;
}

/** The one error type of the HTTP edge: a stable code, a human detail, and optional extra members. */
export class AppError extends Error {
  readonly status: number;

  constructor(
    readonly code: ProblemCode,
    readonly detail: string,
    readonly extra: { errors?: FieldError[]; [member: string]: unknown } = {},
  ) {
    super(`${code}: ${detail}`);
    this.name = "AppError";
    this.status = PROBLEM_STATUS[code];
  }
}

/** Turns an UPPER_SNAKE code into a title: OUT_OF_STOCK → "Out of stock". */
export function titleOf(code: string): string {
  const words = code.toLowerCase().split("_").join(" ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}
