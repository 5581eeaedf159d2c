// Starts Swagger UI on /docs. A file of its own: the page's Content-Security-Policy allows no
// inline script. validatorUrl null: Swagger UI would otherwise send the schema to
// validator.swagger.io for a badge.
"use strict";
(function () {
  const root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    deepLinking: true,
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
  });
})();
