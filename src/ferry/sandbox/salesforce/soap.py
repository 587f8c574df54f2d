"""The partner SOAP API's `login()` call (`POST /services/Soap/u/XX.X`, `SOAPAction: login`).

simple-salesforce's `Salesforce(username=, password=, security_token=)` logs in this way. The answer
is the org's `loginResponse` (serverUrl, sessionId, userId, userInfo ...) or, for a wrong username,
password or security token, HTTP 500 with the `sf:INVALID_LOGIN` fault. No other SOAP call is
emulated: they get a `sf:INVALID_OPERATION` fault that says so.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape

PARTNER_NS = "urn:partner.soap.sforce.com"
_ENVELOPE_OPEN = ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
                  'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:partner.soap.sforce.com" '
                  'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>')
_ENVELOPE_CLOSE = "</soapenv:Body></soapenv:Envelope>"
INVALID_LOGIN = "INVALID_LOGIN: Invalid username, password, security token; or user locked out."


@dataclass(frozen=True, slots=True)
class LoginRequest:
    username: str
    password: str  # password with the security token appended


def parse_login(body: bytes) -> LoginRequest | None:
    """The username and password of a login envelope; None when the body is not a login call."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    login = root.find(f".//{{{PARTNER_NS}}}login")
    if login is None:
        return None
    username = login.findtext(f"{{{PARTNER_NS}}}username") or ""
    password = login.findtext(f"{{{PARTNER_NS}}}password") or ""
    return LoginRequest(username.strip(), password)


def login_response(*, base_url: str, version: str, org_id: str, user_id: str, session_id: str, username: str,
                   full_name: str, email: str, session_seconds: int, profile_id: str) -> str:
    server = f"{base_url}/services/Soap/u/{version}/{org_id[:15]}"
    user_info = "".join([
        "<accessibilityMode>false</accessibilityMode><currencySymbol>$</currencySymbol>",
        "<orgAttachmentFileSizeLimit>5242880</orgAttachmentFileSizeLimit><orgDefaultCurrencyIsoCode>USD",
        "</orgDefaultCurrencyIsoCode><orgDisallowHtmlAttachments>false</orgDisallowHtmlAttachments>",
        "<orgHasPersonAccounts>false</orgHasPersonAccounts>",
        f"<organizationId>{org_id}</organizationId><organizationMultiCurrency>false</organizationMultiCurrency>",
        "<organizationName>ferry sandbox</organizationName>",
        f"<profileId>{escape(profile_id)}</profileId><roleId xsi:nil=\"true\"/>",
        f"<sessionSecondsValid>{session_seconds}</sessionSecondsValid><userDefaultCurrencyIsoCode xsi:nil=\"true\"/>",
        f"<userEmail>{escape(email)}</userEmail><userFullName>{escape(full_name)}</userFullName>",
        f"<userId>{user_id}</userId><userLanguage>en_US</userLanguage><userLocale>en_US</userLocale>",
        f"<userName>{escape(username)}</userName><userTimeZone>GMT</userTimeZone><userType>Standard</userType>",
        "<userUiSkin>Theme3</userUiSkin>",
    ])
    result = "".join([
        f"<metadataServerUrl>{base_url}/services/Soap/m/{version}/{org_id[:15]}</metadataServerUrl>",
        "<passwordExpired>false</passwordExpired><sandbox>true</sandbox>",
        f"<serverUrl>{server}</serverUrl><sessionId>{session_id}</sessionId><userId>{user_id}</userId>",
        f"<userInfo>{user_info}</userInfo>",
    ])
    return f"{_ENVELOPE_OPEN}<loginResponse><result>{result}</result></loginResponse>{_ENVELOPE_CLOSE}"


def fault(code: str, message: str) -> str:
    """A partner API fault; clients read the literal `sf:exceptionCode` / `sf:exceptionMessage` tags."""
    detail_tag = "sf:LoginFault" if code == "INVALID_LOGIN" else "sf:UnexpectedErrorFault"
    return (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
        'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:sf="urn:fault.partner.soap.sforce.com" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>sf:{code}</faultcode><faultstring>{escape(message)}</faultstring><detail>"
        f'<{detail_tag} xsi:type="sf:{detail_tag[3:]}"><sf:exceptionCode>{code}</sf:exceptionCode>'
        f"<sf:exceptionMessage>{escape(message.partition(': ')[2] or message)}</sf:exceptionMessage>"
        f"</{detail_tag}></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )
