"""Bearer-token authentication for agents (MCP, REST and websockets share it)."""

from rest_framework import authentication, exceptions

from agents import selectors, services


class AgentTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <token>` → the token's `Agent` as `request.user`."""

    keyword = "bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Malformed Authorization header: send 'Authorization: Bearer <agent token>'."
            )
        try:
            raw_token = header[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed("The bearer token contains invalid characters.") from None
        agent = selectors.agent_for_token(raw_token=raw_token)
        if agent is None:
            raise exceptions.AuthenticationFailed(
                "Unknown, expired or revoked agent token. Ask an operator to run "
                "`manage.py create_agent <agent_id> --workflow <slug>` for a new one."
            )
        services.agent_token_mark_used(raw_token=raw_token)
        return (agent, raw_token)

    def authenticate_header(self, request):
        return 'Bearer realm="omoios"'
