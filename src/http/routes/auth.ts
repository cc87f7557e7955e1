import type { FastifyPluginAsyncZod } from "fastify-type-provider-zod";
import { z } from "zod";
import type { Identities } from "../../auth/identity.ts";
import { PrintableId, type Tokens } from "../../auth/tokens.ts";
import { AppError } from "../../kit/errors.ts";
import { problems } from "../schemas.ts";

/** How long a token from a directory sign-in lives. */
const TOKEN_TTL_S = 3600;

const SignInBody = z
  .strictObject({
    tenantId: PrintableId,
    username: PrintableId.describe("the directory's user name (the `{username}` of ORDERLY_LDAP_USER_FILTER)"),
    password: z.string().max(1024),
  })
  .meta({ id: "SignIn" });
const AccessToken = z
  .object({ accessToken: z.string(), tokenType: z.literal("Bearer"), expiresIn: z.number().int().describe("seconds") })
  .meta({ id: "AccessToken" });

/**
 * POST /auth/token (api-contract.md §8): a directory's user signs in with a password and gets an
 * access token like any other (§3). Without ORDERLY_LDAP_URL it answers 404, saying so.
 */
export function authRoutes(deps: { identities: Identities; tokens: Tokens }): FastifyPluginAsyncZod {
  const { identities, tokens } = deps;
  return async (app) => {
    app.post(
      "/auth/token",
      {
        schema: {
          tags: ["auth"],
          operationId: "signIn",
          summary: "Sign in through the directory (LDAP) for an access token",
          description:
            "Binds as the user in the directory, maps the user's groups to roles (ORDERLY_LDAP_ROLE_MAP) and answers a token for the user's tenant. " +
            "A wrong password, an unknown user and a user of another tenant are the same 401 INVALID_CREDENTIALS, answered after the same delay as a right one; " +
            "a user in no mapped group 403 FORBIDDEN; a directory that cannot be reached 503 SERVICE_UNAVAILABLE; 404 NOT_FOUND when no directory is configured.",
          security: [],
          body: SignInBody,
          response: { 200: AccessToken, ...problems(400, 401, 403, 404, 429, 503) },
        },
      },
      async (request) => {
        if (!identities.signIn) throw new AppError("NOT_FOUND", "sign-in through a directory is not offered here (ORDERLY_LDAP_URL, ORDERLY_IDENTITY_PROVIDERS)");
        const outcome = await identities.signIn(request.body);
        if (!outcome.ok) {
          switch (outcome.reason) {
            case "INVALID_CREDENTIALS":
              throw new AppError("INVALID_CREDENTIALS", "the user name or the password is wrong");
            case "NO_ROLE":
              throw new AppError("FORBIDDEN", "the directory gives this user no role in Orderly");
            case "DIRECTORY_UNAVAILABLE":
              throw new AppError("SERVICE_UNAVAILABLE", "the directory cannot be reached; try again shortly");
          }
        }
        return { accessToken: await tokens.sign(outcome.value, TOKEN_TTL_S), tokenType: "Bearer" as const, expiresIn: TOKEN_TTL_S };
      },
    );
  };
}
