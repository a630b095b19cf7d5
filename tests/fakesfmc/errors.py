"""SFMC's error answers, raised anywhere in a handler and rendered in one place by the server."""

DOCS_URL = "https://developer.salesforce.com/docs/marketing/marketing-cloud/guide/error-handling.html"


class SfmcError(Exception):
    """A REST error with SFMC's `{"message","errorcode","documentation"}` body."""

    def __init__(self, status: int, errorcode: int, message: str, documentation: str = "",
                 headers: dict | None = None, extra: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.errorcode = errorcode
        self.message = message
        self.documentation = documentation
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict:
        return {"message": self.message, "errorcode": self.errorcode,
                "documentation": self.documentation, **self.extra}


class OAuthError(Exception):
    """An error of the token endpoint, which speaks OAuth rather than SFMC's REST shape."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description

    def body(self) -> dict:
        return {"error": self.error, "error_description": self.description,
                "error_uri": "https://developer.salesforce.com/docs"}


def not_authorized() -> SfmcError:
    return SfmcError(401, 0, "Not Authorized", DOCS_URL)


def bad_request(errorcode: int, name: str, text: str) -> SfmcError:
    return SfmcError(400, errorcode, f"{name}: {text}")


def not_found(name: str, text: str) -> SfmcError:
    return SfmcError(404, 30003, f"{name}: {text}")
