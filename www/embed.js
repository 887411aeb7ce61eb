// The embed page's one script: the widget, configured from the page's URL. A file rather than
// an inline script, which the page's Content-Security-Policy does not allow.
import { widgetFromUrl } from './widget.js';

document.body.append(widgetFromUrl(new URLSearchParams(location.search)));
